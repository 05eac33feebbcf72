-- request.lua -- echo every request field of lua/README.md ("The request") as JSON.
-- Strings that may hold any byte are sent as hex; lists as { n = #list, v = list }.
local moonlet = require "moonlet"

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function val(v)
  if v == nil then return { t = "nil" } end
  if type(v) == "number" then return { t = math.type(v), v = v } end
  if type(v) == "string" then return { t = "string", hex = hex(v) } end
  return { t = type(v) }
end

local function vals(list)
  if type(list) ~= "table" then return { t = type(list) } end
  local out = {}
  for i, v in ipairs(list) do out[i] = val(v) end
  return { t = "list", n = #list, v = out }
end

-- option lookups by registry name and by number
local PROBES = { "Uri-Host", "ETag", "If-Match", "Accept", "Content-Format", "Uri-Port",
  "Size1", "Uri-Path", "Uri-Query", 4, 11, 17, 60, 2048 }

local function snapshot(req)
  local q, nq = {}, 0
  for k, v in pairs(req.query) do
    nq = nq + 1
    if type(v) == "table" then q[k] = { list = v, n = #v }
    elseif v == true then q[k] = { flag = true }
    else q[k] = { s = v, t = type(v) } end
  end
  local opt = {}
  for _, p in ipairs(PROBES) do
    opt[tostring(p)] = { first = val(req:option(p)), all = vals(req:options(p)) }
  end
  return {
    method = req.method, path = req.path,
    segments = { n = #req.segments, v = req.segments },
    query = q, nq = nq, query_raw = req.query_raw,
    payload_hex = hex(req.payload), payload_len = #req.payload, payload_type = type(req.payload),
    ct = req.ct, accept = req.accept, peer = req.peer,
    identity_type = type(req.identity),
    opt = opt,
  }
end

local function echo(req)
  local before = snapshot(req)
  local out = { req = before }
  local s = tonumber(req.query.sleep)
  if s then
    moonlet.sleep(s)
    out.after_sleep = snapshot(req)       -- a request stays readable after moonlet.sleep
  end
  return moonlet.CONTENT, moonlet.json.encode(out), { ct = moonlet.ct.json }
end

moonlet.resource{ path = "/req/echo", handler = echo }
moonlet.resource{ path = "/req/a%20b", handler = echo }     -- one segment "a b"
moonlet.resource{ path = "/req/x%2Fy", handler = echo }     -- one segment "x/y"
