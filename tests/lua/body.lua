-- body.lua -- req.body (lua/README.md "The request"): the payload decoded per its
-- Content-Format, once, on first read; a body that cannot be decoded ends the handler with
-- 4.00/4.13/4.15. Driven by tests/integration/test_body.py.
local moonlet = require "moonlet"

local text = require "describe"
local describe, hex = text.describe, text.hex

-- POST /b/echo: "ok " .. describe(req.body); the rest of the handler runs only after a
-- successful read (moonlet.state.reached counts the handler runs that got past it)
moonlet.state.reached = 0
moonlet.resource{ path = "/b/echo", handler = function(req)
  local body = req.body
  moonlet.state.reached = moonlet.state.reached + 1
  return moonlet.CONTENT, "ok " .. describe(body), { ct = moonlet.ct.text }
end }

moonlet.resource{ path = "/b/reached", get = function()
  return moonlet.CONTENT, tostring(moonlet.state.reached)
end }

-- POST /b/back: the body returned as the answer, encoded per Accept (a table) -- the JSON ->
-- CBOR and CBOR -> CBOR round trips
moonlet.resource{ path = "/b/back", post = function(req)
  return moonlet.CONTENT, req.body
end }

-- the cache: two reads give the same table; a change made through the first is seen
-- through the second
moonlet.resource{ path = "/b/twice", post = function(req)
  local a = req.body
  local b = req.body
  if type(a) == "table" then a.seen = "yes" end
  return moonlet.CONTENT, (rawequal(a, b) and "same" or "different") .. " " ..
    (type(b) == "table" and tostring(b.seen) or "-")
end }

-- the error object, caught: its code, message and text; read again, the same error
moonlet.resource{ path = "/b/caught", post = function(req)
  local ok, e = pcall(function() return req.body end)
  if ok then return moonlet.CONTENT, "read " .. describe(e) end
  local ok2, e2 = pcall(function() return req.body end)
  return moonlet.CONTENT, table.concat({ moonlet.code_str(e.code), e.message, tostring(e),
    tostring(not ok2 and rawequal(e, e2)) }, "|")
end }

-- the body read after a wait: a bad one is answered 4.00 through the deferred answer
moonlet.resource{ path = "/b/later", post = function(req)
  moonlet.sleep(0)
  return moonlet.CONTENT, "ok " .. describe(req.body)
end }

-- moonlet.json.decode and req.body agree on JSON
moonlet.resource{ path = "/b/same", post = function(req)
  local v, err = moonlet.json.decode(req.payload)
  if v == nil then return moonlet.CONTENT, "err " .. err end
  return moonlet.CONTENT, describe(v) == describe(req.body) and "same " .. describe(v)
    or "differ " .. describe(v) .. " " .. describe(req.body)
end }

-- moonlet.cbor.decode: tags dropped as before, kept with {tags = true}
moonlet.resource{ path = "/b/cbor", post = function(req)
  local plain, e1 = moonlet.cbor.decode(req.payload)
  local kept, e2 = moonlet.cbor.decode(req.payload, { tags = true })
  return moonlet.CONTENT, (e1 or describe(plain)) .. " " .. (e2 or describe(kept))
end }

-- moonlet.cbor.tag builds a tagged value; encode writes the tag, bytes = true a byte string
moonlet.resource{ path = "/b/tag", get = function()
  local t = moonlet.cbor.tag(2, "\1\0\0\0\0\0\0\0\0")
  t.bytes = true
  local bad = pcall(moonlet.cbor.encode, setmetatable({ tag = "x" }, moonlet.cbor.tagged))
  return moonlet.CONTENT, hex(moonlet.cbor.encode({ moonlet.cbor.tag(1, 1363896240), t,
    moonlet.cbor.tag(-1, "x") })) .. " " .. tostring(bad)
end }
