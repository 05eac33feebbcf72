-- request.lua -- echo every request field of lua/README.md ("The request") as JSON.
-- /req/echo: the fields; /req/opts: req:option()/req:options() for a fixed set of names and
-- numbers, each value as "n:NUMBER", "s:HEX" or "nil", a list as those joined by ",".
-- ?sleep=S sleeps first and answers { req = before, after_sleep = after }.
local moonlet = require "moonlet"

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function val(v)
  if v == nil then return "nil" end
  if math.type(v) == "integer" then return "n:" .. v end
  if type(v) == "number" then return "f:" .. v end
  if type(v) == "string" then return "s:" .. hex(v) end
  return "?" .. type(v)
end

local function vals(list)
  if type(list) ~= "table" then return "?" .. type(list) end
  local out = {}
  for i, v in ipairs(list) do out[i] = val(v) end
  return "[" .. table.concat(out, ",") .. "]"
end

-- a payload too long to echo in hex: (h * 31 + byte) % 2147483647 over every byte
local function checksum(s)
  local h = 0
  for i = 1, #s do h = (h * 31 + s:byte(i)) % 2147483647 end
  return h
end

local PROBES = { "Uri-Host", "ETag", "If-Match", "Accept", "Content-Format", "Uri-Port",
  "Size1", "Uri-Path", "Uri-Query", 4, 11, 17, 60, 2048 }

local function fields(req)
  local q, nq = {}, 0
  for k, v in pairs(req.query) do
    nq = nq + 1
    if type(v) == "table" then q[k] = { list = v, n = #v }
    elseif v == true then q[k] = { flag = true }
    else q[k] = { s = v, t = type(v) } end
  end
  return {
    method = req.method, path = req.path,
    segments = { n = #req.segments, v = req.segments },
    query = q, nq = nq, query_raw = req.query_raw,
    payload_hex = (#req.payload <= 256) and hex(req.payload) or nil,
    payload_sum = checksum(req.payload), payload_len = #req.payload,
    payload_type = type(req.payload),
    ct = req.ct, accept = req.accept, peer = req.peer,
    identity_type = type(req.identity),
    identity_auth = req.identity.auth,
  }
end

local function options(req)
  local opt = {}
  for _, p in ipairs(PROBES) do
    opt[tostring(p)] = val(req:option(p)) .. " " .. vals(req:options(p))
  end
  return opt
end

local function responder(snapshot)
  return function(req)
    local out = { req = snapshot(req) }
    local s = tonumber(req.query.sleep)
    if s then
      moonlet.sleep(s)
      out.after_sleep = snapshot(req)     -- a request stays readable after moonlet.sleep
    end
    return moonlet.CONTENT, moonlet.json.encode(out), { ct = moonlet.ct.json }
  end
end

moonlet.resource{ path = "/req/echo", handler = responder(fields) }
moonlet.resource{ path = "/req/opts", handler = responder(options) }
moonlet.resource{ path = "/req/a%20b", handler = responder(fields) }     -- one segment "a b"
moonlet.resource{ path = "/req/x%2Fy", handler = responder(fields) }     -- one segment "x/y"
