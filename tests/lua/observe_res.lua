-- observe_res.lua -- resources for tests/integration/test_observe.py (RFC 7641).
--   /o/counter   obs, autonotify: GET "n=<n>"; PUT sets n (each 2.04 notifies); the GET
--                handler counts its runs in /o/runs
--   /o/con       the same value, obs + notify_con: every notification is a CON
--   /o/tick      obs; POST starts a timer notifying every ?ms= milliseconds (default 50),
--                DELETE stops it; GET "t=<k>"
--   /o/variant   obs, ct text and json: the value of /o/counter in the Accept'ed format
--   /o/big       obs: 4096 bytes, "<n>:" then a letter per 64-byte line; changes with n
--   /o/slow      obs: GET waits 50 ms (moonlet.sleep) then "s=<n>"
--   /o/gone      obs: 2.05 "here" until /o/counter's n is 99, then 4.04
--   /o/plain     not observable: "plain"
--   /o/silent    PUT sets /o/counter's n without notifying anybody
--   /o/runs      GET: how often the observable GET handlers ran, "counter=<a> variant=<b>"
local moonlet = require "moonlet"

local n, t = 0, 0
local runs = { counter = 0, variant = 0 }
local notified = {}

local function bump(v)
  n = v
  for _, r in ipairs(notified) do r:notify() end
end

moonlet.resource{
  path = "/o/counter", obs = true, autonotify = true, rt = "counter",
  get = function() runs.counter = runs.counter + 1; return moonlet.CONTENT, "n=" .. n end,
  put = function(req)
    local v = tonumber(req.payload)
    if not v then return moonlet.BAD_REQUEST, "a number" end
    bump(v)
    return moonlet.CHANGED
  end,
}

notified[#notified + 1] = moonlet.resource{
  path = "/o/con", obs = true, notify_con = true,
  get = function() return moonlet.CONTENT, "n=" .. n end,
}

notified[#notified + 1] = moonlet.resource{
  path = "/o/variant", obs = true, ct = { moonlet.ct.text, moonlet.ct.json },
  get = function(req)
    runs.variant = runs.variant + 1
    if req.accept == moonlet.ct.json then return moonlet.CONTENT, { n = n } end
    return moonlet.CONTENT, "n=" .. n
  end,
}

notified[#notified + 1] = moonlet.resource{
  path = "/o/big", obs = true,
  get = function()
    local lines = {}
    for i = 1, 64 do
      local head = ("%d:%d:"):format(n, i)
      lines[i] = head .. string.rep(string.char(64 + (n + i) % 26), 63 - #head) .. "\n"
    end
    return moonlet.CONTENT, table.concat(lines)
  end,
}

notified[#notified + 1] = moonlet.resource{
  path = "/o/slow", obs = true,
  get = function()
    moonlet.sleep(0.05)
    return moonlet.CONTENT, "s=" .. n
  end,
}

notified[#notified + 1] = moonlet.resource{
  path = "/o/gone", obs = true,
  get = function()
    if n == 99 then return moonlet.NOT_FOUND end
    return moonlet.CONTENT, "here"
  end,
}

local timer
local tick = moonlet.resource{
  path = "/o/tick", obs = true,
  get = function() return moonlet.CONTENT, "t=" .. t end,
  post = function(req)
    if timer then timer:cancel() end
    local ms = tonumber(req.query.ms) or 50
    timer = moonlet.every(ms / 1000, function()
      t = t + 1
      moonlet.notify("/o/tick")
    end)
    return moonlet.CHANGED
  end,
  delete = function()
    if timer then timer:cancel(); timer = nil end
    return moonlet.DELETED
  end,
}
assert(tick.path == "/o/tick")

moonlet.resource{
  path = "/o/silent",
  put = function(req) n = tonumber(req.payload) or n; return moonlet.CHANGED end,
}

moonlet.resource{ path = "/o/plain", get = function() return moonlet.CONTENT, "plain" end }

moonlet.resource{
  path = "/o/runs",
  get = function()
    return moonlet.CONTENT, ("counter=%d variant=%d"):format(runs.counter, runs.variant)
  end,
}
