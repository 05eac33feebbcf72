-- errors.lua -- handler errors, unsendable return values and the budgets (lua/README.md
-- "Errors and limits"; MALFORMED.md A2, A3, A4). /e/ok is the "next request still served".
-- test_lua.py finds the line numbers of the error() calls by their text: keep each on one line.
local moonlet = require "moonlet"
local st = moonlet.state

moonlet.resource{ path = "/e/ok", get = function(req) return moonlet.CONTENT, "ok" end }

moonlet.resource{ path = "/e/boom", get = function(req)
  error("boom")
end }

-- A4: error objects that are not strings
moonlet.resource{ path = "/e/obj", get = function(req)
  local k = req.query.k
  if k == "table" then error({}) end
  if k == "nil" then error(nil) end
  if k == "number" then error(42) end
  if k == "false" then error(false) end
  if k == "function" then error(print) end
  if k == "tostring" then error(setmetatable({}, { __tostring = function() return "custom object" end })) end
  if k == "badtostring" then error(setmetatable({}, { __tostring = function() error("nested") end })) end
  if k == "coroutine" then error(coroutine.create(function() end)) end
  return moonlet.CONTENT, "no error for " .. tostring(k)
end }

-- an error after a wait: the coroutine was resumed by the event loop
moonlet.resource{ path = "/e/late", get = function(req)
  moonlet.sleep(0.05)
  error("late boom")
end }

-- A2 / A3: return values that cannot be sent
moonlet.resource{ path = "/e/ret", get = function(req)
  local k = req.query.k
  if k == "999" then return 999, "x" end
  if k == "nan" then return 0/0, "x" end
  if k == "inf" then return math.huge, "x" end
  if k == "neg" then return -1, "x" end
  if k == "zero" then return 0, "x" end
  if k == "method" then return 1, "x" end
  if k == "class1" then return 32, "x" end
  if k == "class3" then return 96, "x" end
  if k == "class7" then return 224, "x" end
  if k == "frac" then return 69.5, "x" end
  if k == "table_text" then return moonlet.CONTENT, { a = 1 }, { ct = moonlet.ct.text } end
  if k == "table_octets" then return moonlet.CONTENT, { a = 1 }, { ct = moonlet.ct.octets } end
  if k == "table_fn" then return moonlet.CONTENT, { f = print } end
  if k == "big" then return moonlet.CONTENT, string.rep("x", tonumber(req.query.n)) end
  return moonlet.CONTENT, "plain"
end }

-- a table payload on a text/plain resource
moonlet.resource{ path = "/e/table_textres", ct = moonlet.ct.text, get = function(req)
  return moonlet.CONTENT, { a = 1 }
end }

-- the instruction budget
moonlet.resource{ path = "/e/loop", get = function(req)
  while true do end
end }

-- n iterations (2 VM instructions each) per round, r rounds, a sleep of p s between rounds
moonlet.resource{ path = "/e/spin", get = function(req)
  local n, r, p = tonumber(req.query.n), tonumber(req.query.r or "1"), tonumber(req.query.p or "0")
  local x = 0
  for round = 1, r do
    for i = 1, n do x = x + i end
    if p > 0 and round < r then moonlet.sleep(p) end
  end
  return moonlet.CONTENT, tostring(x)
end }

-- the memory budget: a growing table of 64 KiB strings, bounded at 64 MiB
moonlet.resource{ path = "/e/bomb", get = function(req)
  local t = {}
  for i = 1, 1024 do t[i] = string.rep("x", 65536) .. i end
  return moonlet.CONTENT, "survived " .. #t
end }

-- a timer callback that never ends
moonlet.resource{ path = "/e/timer_loop", post = function(req)
  moonlet.after(0, function()
    st.timer_loop_started = (st.timer_loop_started or 0) + 1
    while true do end
  end)
  return moonlet.CHANGED
end }
