-- misc.lua -- logging, the clock, the codecs, state, code helpers (lua/README.md "Timers,
-- notifications, logging, state").
local moonlet = require "moonlet"
local st = moonlet.state
st.hits = 0

moonlet.resource{ path = "/m/log", post = function(req)
  moonlet.log(req.query.level or "warn", "marker", req.payload, 42, true)
  print("printed", req.payload)
  return moonlet.CHANGED
end }

moonlet.resource{ path = "/m/now", get = function(req)
  local t0 = moonlet.now()
  moonlet.sleep(tonumber(req.query.s or "0.2"))
  local t1 = moonlet.now()
  return moonlet.CONTENT, moonlet.json.encode{ t0 = t0, t1 = t1, tt = math.type(t0) }, { ct = moonlet.ct.json }
end }

-- JSON in, CBOR out and CBOR in, JSON out
moonlet.resource{ path = "/m/j2c", post = function(req)
  return moonlet.CONTENT, moonlet.cbor.encode(moonlet.json.decode(req.payload)), { ct = moonlet.ct.cbor }
end }
moonlet.resource{ path = "/m/c2j", post = function(req)
  return moonlet.CONTENT, moonlet.json.encode(moonlet.cbor.decode(req.payload)), { ct = moonlet.ct.json }
end }

-- state survives between requests
moonlet.resource{ path = "/m/hits", post = function(req)
  st.hits = st.hits + 1
  return moonlet.CHANGED, tostring(st.hits)
end }

-- moonlet.conf(key [, default]): -s misc.KEY=VALUE; moonlet.script_dir
moonlet.resource{ path = "/m/conf", get = function(req)
  return moonlet.CONTENT, moonlet.json.encode{
    greeting = moonlet.conf("greeting", "none"), missing = tostring(moonlet.conf("missing")),
    missing_t = type(moonlet.conf("missing")), dir = moonlet.script_dir,
  }, { ct = moonlet.ct.json }
end }
