-- links.lua -- resource declarations and their link attributes (lua/README.md "Resources";
-- MALFORMED.md R17, R18). Declarations that must be refused are tried under pcall while the
-- script loads; /l/probe reports what happened to them.
local moonlet = require "moonlet"
local st = moonlet.state
local function ok(req) return moonlet.CONTENT, "ok" end

moonlet.resource{
  path = "/l/all", rt = { "temperature", "c" }, iface = "sensor",
  ct = { moonlet.ct.text, moonlet.ct.json }, sz = 12, obs = true, title = "Room temperature",
  attrs = { foo = "bar", flag = true }, get = ok,
}
moonlet.resource{ path = "/l/if", ["if"] = "actuator", rt = "single", ct = moonlet.ct.cbor, get = ok }
moonlet.resource{ path = "/l/hidden", hidden = true, get = ok }
moonlet.resource{ path = "/l/visible", hidden = false, get = ok }
moonlet.resource{ path = "/l/sp%20ace", get = function(req) return moonlet.CONTENT, req.segments[2] end }
local obj
obj = moonlet.resource{ path = "/l/obj", get = function(req)
  local n1, e1 = obj:notify()
  local n2, e2 = moonlet.notify("/l/obj")
  local n3, e3 = moonlet.notify(obj)
  local n4, e4 = moonlet.notify("/l/nothing-here")
  return moonlet.CONTENT, moonlet.json.encode{
    path = obj.path, n1 = n1, n2 = n2, n3 = n3, n4 = tostring(n4), e4 = tostring(e4),
  }, { ct = moonlet.ct.json }
end }
st.obj_path_at_load = obj.path

-- declaring a resource after load (in a handler) is an error
moonlet.resource{ path = "/l/late", get = function(req)
  local r, err = moonlet.resource{ path = "/l/new", get = ok }
  return moonlet.CONTENT, moonlet.json.encode{ ok = r ~= nil, path = r and r.path,
                                               err = tostring(err) },
         { ct = moonlet.ct.json }
end }

-- R17: an attribute value that would break the link-format if not escaped
local r17_ok, r17_err = pcall(moonlet.resource, { path = "/l/r17", rt = 'x",</secret>;rt="y', get = ok })
-- R18: hrefs with '>' ',' or CR LF
local r18 = {}
for i, p in ipairs({ "/l/r18a>b", "/l/r18a,b", "/l/r18a\r\nb", "/l/r18a<b" }) do
  local okd, err = pcall(moonlet.resource, { path = p, get = ok })
  r18[i] = { path = p, ok = okd, err = tostring(err) }
end

moonlet.resource{ path = "/l/probe", get = function(req)
  return moonlet.CONTENT, moonlet.json.encode{
    r17_ok = r17_ok, r17_err = tostring(r17_err), r18 = r18, obj_path_at_load = st.obj_path_at_load,
  }, { ct = moonlet.ct.json }
end }
