-- describe.lua -- describe(v), a canonical text for a decoded value, and hex(s), for the
-- decoder tests (tests/lua/body.lua, decode.lua; the sandbox's require finds it beside them):
-- i5, f0.5, x<hex> (strings), true, null (moonlet.json.null), nil, {KEY=VALUE,...} sorted by
-- the key's text, tag<N>(VALUE) or tag<N>b(VALUE) (a kept CBOR tag; b: of a byte string).
local moonlet = require "moonlet"
local describe

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function number(v)
  if math.type(v) == "integer" then return "i" .. v end
  if v ~= v then return "fnan" end
  return "f" .. string.format("%.17g", v)
end

local function tab(t)
  local mt = getmetatable(t)
  if mt and mt.__name == "moonlet.cbor.tagged" then
    return "tag" .. t.tag .. (t.bytes and "b" or "") .. "(" .. describe(t.value) .. ")"
  end
  local items = {}
  for k, v in pairs(t) do items[#items + 1] = describe(k) .. "=" .. describe(v) end
  table.sort(items)
  return "{" .. table.concat(items, ",") .. "}"
end

describe = function(v)
  local ty = type(v)
  if ty == "number" then return number(v) end
  if ty == "string" then return "x" .. hex(v) end
  if ty == "table" then return tab(v) end
  if v == moonlet.json.null then return "null" end
  return tostring(v)
end

return { describe = describe, hex = hex }
