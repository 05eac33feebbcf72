-- soak.lua -- the server side of the soak run (tests/soak/soak.py, `make soak`): one of each
-- kind of lasting state a peer can make. soak.py appends a comment to a copy of this file
-- every minute, so the server hot-reloads it all along.
--
--   /soak/tick    observable, changes every second ("tick N")
--   /soak/still   observable, never changes
--   /soak/small   GET a few bytes
--   /soak/slow    GET sleeps ?s= seconds (default 2), then answers: a deferred answer
--   /soak/big     GET 64 KiB (block-wise), the same bytes in every version of the script
--   /soak/up      PUT a body (Block1); answers 2.04 with its length; nothing is kept
local moonlet = require "moonlet"

local state = moonlet.state         -- the tick survives the reloads
state.tick = state.tick or 0

local tick = moonlet.resource{ path = "/soak/tick", obs = true, get = function()
  return moonlet.CONTENT, "tick " .. state.tick
end }

moonlet.every(1, function()
  state.tick = state.tick + 1
  tick:notify()
end)

moonlet.resource{ path = "/soak/still", obs = true, get = function()
  return moonlet.CONTENT, "still"
end }

moonlet.resource{ path = "/soak/small", get = function()
  return moonlet.CONTENT, "small"
end }

moonlet.resource{ path = "/soak/slow", get = function(req)
  moonlet.sleep(tonumber(req.query.s) or 2)
  return moonlet.CONTENT, "slow"
end }

-- 64 KiB: byte i is i % 251 (a prime, so blocks differ); soak.py checks the same bytes
local bytes = {}
for i = 0, 250 do bytes[#bytes + 1] = string.char(i) end
local big = string.rep(table.concat(bytes), 65536 // 251 + 1):sub(1, 65536)

moonlet.resource{ path = "/soak/big", ct = moonlet.ct.octets, get = function()
  return moonlet.CONTENT, big
end }

moonlet.resource{ path = "/soak/up", put = function(req)
  return moonlet.CHANGED, tostring(#req.payload)
end }
