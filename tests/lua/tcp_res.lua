-- tcp_res.lua -- resources for the CoAP-over-TCP suite (tests/integration/test_tcp.py).
--
--   /tcp/big    GET  262144 bytes: the 32-bit big-endian words (i * 2654435761) mod 2^32,
--                    i = 0, 1, ... (test_tcp.py computes the same bytes)
--   /tcp/up     PUT, POST  the body: 2.04 "len=<n> same=<yes|no>" (same: equal to /tcp/big);
--                    GET  the last body stored
--   /tcp/clock  obs  GET "n=<n>"; n counts up every 100 ms and each step notifies
--   /tcp/flood  obs  GET 900 bytes "<k>:" and filler; POST ?ms=N starts notifying every N ms
--                    (default 2), DELETE stops it
--   /tcp/nap    GET  sleeps ?s= seconds (default 0.3; moonlet.sleep), then 2.05 "nap"
--   /tcp/err    GET  4.00 with a 300-byte diagnostic payload (an answer that has no blocks)
local moonlet = require "moonlet"

local words = {}
for i = 0, 65535 do words[#words + 1] = string.pack(">I4", (i * 2654435761) & 0xffffffff) end
local big = table.concat(words)
local last = ""

moonlet.resource{ path = "/tcp/big", ct = moonlet.ct.octets, get = function()
  return moonlet.CONTENT, big
end }

local function store(req)
  last = req.payload
  return moonlet.CHANGED, ("len=%d same=%s"):format(#last, last == big and "yes" or "no")
end

moonlet.resource{ path = "/tcp/up", put = store, post = store,
  get = function() return moonlet.CONTENT, last, { ct = moonlet.ct.octets } end }

local n = 0
moonlet.resource{ path = "/tcp/clock", obs = true, rt = "tcp-clock",
  get = function() return moonlet.CONTENT, "n=" .. n end }
moonlet.every(0.1, function() n = n + 1; moonlet.notify("/tcp/clock") end)

local k, timer = 0, nil
moonlet.resource{ path = "/tcp/flood", obs = true,
  get = function()
    local head = k .. ":"
    return moonlet.CONTENT, head .. string.rep("f", 900 - #head)
  end,
  post = function(req)
    if timer then timer:cancel() end
    timer = moonlet.every((tonumber(req.query.ms) or 2) / 1000, function()
      k = k + 1
      moonlet.notify("/tcp/flood")
    end)
    return moonlet.CHANGED
  end,
  delete = function()
    if timer then timer:cancel(); timer = nil end
    return moonlet.DELETED
  end,
}

moonlet.resource{ path = "/tcp/nap", get = function(req)
  moonlet.sleep(tonumber(req.query.s) or 0.3)
  return moonlet.CONTENT, "nap"
end }

moonlet.resource{ path = "/tcp/err", get = function()
  return moonlet.BAD_REQUEST, string.rep("e", 300)
end }
