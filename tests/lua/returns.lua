-- returns.lua -- one resource per return convention of lua/README.md ("What a handler
-- returns"). Driven by tests/integration/test_lua.py.
local moonlet = require "moonlet"

-- code, payload (the resource declares no formats: no Content-Format)
moonlet.resource{ path = "/r/code_payload", get = function(req) return moonlet.CONTENT, "21.5" end }

-- code, payload, opts: ct, max_age, etag (bytes, with a NUL and 0xff), location
moonlet.resource{
  path = "/r/opts",
  get = function(req)
    return moonlet.CONTENT, "21.5", { ct = moonlet.ct.text, max_age = 30, etag = "\1\2\0\255" }
  end,
  post = function(req)
    return moonlet.CREATED, "made", { location = "/things/7?x=1&y=2" }
  end,
}

-- max_age = 0 is a Max-Age option with the uint 0 (an empty value)
moonlet.resource{ path = "/r/maxage0", get = function(req)
  return moonlet.CONTENT, "fresh", { max_age = 0 }
end }

-- options by registry name and by number; a number is a uint, a string bytes, a list repeats
moonlet.resource{
  path = "/r/named",
  get = function(req)
    return moonlet.CONTENT, "named", {
      ["Content-Format"] = moonlet.ct.json, ["Max-Age"] = 60, ["ETag"] = "tg",
      [2048] = "x", [2052] = 7, [2056] = { "p", "q" },
    }
  end,
  post = function(req)
    return moonlet.CREATED, "", { ["Location-Path"] = { "a", "b" }, ["Location-Query"] = "k=v" }
  end,
}

-- a table payload: encoded per opts.ct, else Accept, else the resource's first ct, else JSON
local sample = { celsius = 21.5, n = 7, name = "x", list = { 1, 2, 3 }, nested = { ok = true } }
moonlet.resource{ path = "/r/table", get = function(req) return moonlet.CONTENT, sample end }
moonlet.resource{ path = "/r/table_simple", get = function(req) return moonlet.CONTENT, { a = 1 } end }
moonlet.resource{ path = "/r/table_opt_cbor", get = function(req)
  return moonlet.CONTENT, { a = 1 }, { ct = moonlet.ct.cbor }
end }
moonlet.resource{ path = "/r/table_ct", ct = { moonlet.ct.cbor, moonlet.ct.json }, get = function(req)
  return moonlet.CONTENT, { a = 1 }
end }

-- a payload alone: the method's success code
moonlet.resource{ path = "/r/alone", handler = function(req) return "p:" .. req.method end }

-- a code alone
moonlet.resource{ path = "/r/code_alone", handler = function(req) return moonlet.CHANGED end }

-- nothing: the method's success code, no payload
moonlet.resource{ path = "/r/nothing", handler = function(req) return end }

-- a client error with a diagnostic
moonlet.resource{ path = "/r/bad_request", get = function(req)
  return moonlet.BAD_REQUEST, "interval must be 1..3600"
end }

-- every code constant on the wire: ?name=NOT_FOUND answers moonlet.NOT_FOUND, "c"
moonlet.resource{ path = "/r/code_by_name", get = function(req)
  local c = moonlet[req.query.name]
  if type(c) ~= "number" then return moonlet.code(4, 0), "missing constant" end
  return c, "c"
end }

-- the constants and helpers, as JSON
local CODES = { "CREATED", "DELETED", "VALID", "CHANGED", "CONTENT", "CONTINUE", "BAD_REQUEST",
  "UNAUTHORIZED", "BAD_OPTION", "FORBIDDEN", "NOT_FOUND", "METHOD_NOT_ALLOWED", "NOT_ACCEPTABLE",
  "REQUEST_ENTITY_INCOMPLETE", "CONFLICT", "PRECONDITION_FAILED", "REQUEST_ENTITY_TOO_LARGE",
  "UNSUPPORTED_CONTENT_FORMAT", "UNPROCESSABLE_ENTITY", "TOO_MANY_REQUESTS",
  "INTERNAL_SERVER_ERROR", "NOT_IMPLEMENTED", "BAD_GATEWAY", "SERVICE_UNAVAILABLE",
  "GATEWAY_TIMEOUT", "PROXYING_NOT_SUPPORTED", "HOP_LIMIT_REACHED" }
local CTS = { "text", "link_format", "xml", "octets", "exi", "json", "cbor", "senml_json",
  "senml_cbor" }
moonlet.resource{ path = "/r/constants", get = function(req)
  local out = { codes = {}, ct = {}, code_str = {} }
  for _, name in ipairs(CODES) do
    local c = moonlet[name]
    out.codes[name] = (type(c) == "number") and c or ("missing: " .. type(c))
    if type(c) == "number" then out.code_str[name] = moonlet.code_str(c) end
  end
  for _, name in ipairs(CTS) do
    local v = moonlet.ct[name]
    out.ct[name] = (type(v) == "number") and v or ("missing: " .. type(v))
  end
  out.code_2_05 = moonlet.code(2, 5)
  out.code_4_04 = moonlet.code(4, 4)
  out.code_5_03 = moonlet.code(5, 3)
  out.code_str_69 = moonlet.code_str(69)
  out.code_str_160 = moonlet.code_str(160)
  return moonlet.CONTENT, moonlet.json.encode(out), { ct = moonlet.ct.json }
end }

-- a method's own handler wins over `handler`; a method with neither gives 4.05
moonlet.resource{ path = "/r/mixed",
  get = function(req) return moonlet.CONTENT, "own get" end,
  handler = function(req) return moonlet.CHANGED, "handler " .. req.method end }
moonlet.resource{ path = "/r/getonly", get = function(req) return moonlet.CONTENT, "g" end }
