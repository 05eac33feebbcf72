-- negotiate.lua -- content negotiation against a resource's ct list (lua/README.md:
-- "when ct is given, an Accept outside it gives 4.06 and a request body in a format outside
-- it gives 4.15 -- before the handler runs"). /n/runs counts handler runs.
local moonlet = require "moonlet"
local st = moonlet.state
st.runs = 0
local function run() st.runs = st.runs + 1 end

moonlet.resource{
  path = "/n/tj", ct = { moonlet.ct.text, moonlet.ct.json },
  get = function(req) run(); return moonlet.CONTENT, "v" end,
  put = function(req) run(); return moonlet.CHANGED, "ct=" .. tostring(req.ct) end,
  post = function(req) run(); return moonlet.CHANGED, "ct=" .. tostring(req.ct) end,
}
moonlet.resource{ path = "/n/json", ct = moonlet.ct.json,
  get = function(req) run(); return moonlet.CONTENT, '"j"' end }
moonlet.resource{ path = "/n/table", ct = { moonlet.ct.cbor, moonlet.ct.json },
  get = function(req) run(); return moonlet.CONTENT, { a = 1 } end }
moonlet.resource{ path = "/n/override", ct = { moonlet.ct.text, moonlet.ct.json },
  get = function(req) run(); return moonlet.CONTENT, '"o"', { ct = moonlet.ct.json } end }
moonlet.resource{ path = "/n/runs", get = function(req)
  return moonlet.CONTENT, tostring(st.runs)
end }
