-- decode.lua -- moonlet.cbor.decode and moonlet.json.decode on untrusted payloads (lua/README.md
-- "JSON and CBOR"). POST /d/cbor, /d/json: "ok " .. a description of the value, or "err " ..
-- the error; ?short: "ok TYPE COUNT" instead. GET /d/misuse: what raises and what does not.
local moonlet = require "moonlet"

local text = require "describe"
local describe = text.describe

local function count(v)
  if type(v) ~= "table" then return 0 end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  return n
end

local function answer(req, v, err)
  if err ~= nil then
    return moonlet.CONTENT, "err " .. tostring(err)
  end
  if req.query.short then return moonlet.CONTENT, "ok " .. type(v) .. " " .. count(v) end
  return moonlet.CONTENT, "ok " .. describe(v)
end

moonlet.resource{ path = "/d/cbor", post = function(req)
  return answer(req, moonlet.cbor.decode(req.payload))
end }

moonlet.resource{ path = "/d/json", post = function(req)
  return answer(req, moonlet.json.decode(req.payload))
end }

-- misuse still raises, data does not; a JSON depth above 32 is refused (on an instance of
-- our own: moonlet.json keeps its settings); require "cjson" is moonlet.json
moonlet.resource{ path = "/d/misuse", get = function()
  local function raises(f, ...) return (pcall(f, ...)) and "returned" or "raised" end
  local j = moonlet.json.new()
  return moonlet.CONTENT, table.concat({
    raises(moonlet.cbor.decode, {}), raises(moonlet.json.decode, {}),
    raises(moonlet.cbor.decode, "\255"), raises(j.decode, "["),
    raises(j.decode_max_depth, 33), raises(j.decode_max_depth, 8),
    require("cjson") == moonlet.json and "same" or "other" }, " ")
end }
