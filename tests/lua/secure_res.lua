-- secure_res.lua -- resources for the DTLS and TLS suites (test_dtls.py, test_tls.py):
--   /who      GET  the peer's identity: "AUTH|NAME|ALT,ALT"
--   /secret   GET  only over a secure transport (secure = true)
--   /sensors  GET  only for identities psk:sensor-* and x509:dns:*.example
--   /big      GET  262144 bytes, 'A'..'Z' repeating by 7; /up PUT: "LEN:same|diff" against it
--   /count    POST counts, GET reads the count
--   /clock    observable, counts up every 200 ms
local moonlet = require "moonlet"
moonlet.resource{ path = "/who", get = function(req)
  local id = req.identity
  return moonlet.CONTENT, id.auth .. "|" .. id.name .. "|" .. table.concat(id.alt, ",")
end }
moonlet.resource{ path = "/secret", secure = true,
  get = function() return moonlet.CONTENT, "secret" end }
moonlet.resource{ path = "/sensors", allow = { "psk:sensor-*", "x509:dns:*.example" },
  get = function() return moonlet.CONTENT, "sensors" end }
local big = {}
for i = 0, 262143 do big[#big + 1] = string.char(65 + (i * 7) % 26) end
big = table.concat(big)
moonlet.resource{ path = "/big", get = function() return moonlet.CONTENT, big end }
moonlet.resource{ path = "/up", put = function(req)
  return moonlet.CHANGED, tostring(#req.payload) .. ":" .. (req.payload == big and "same" or "diff")
end }
local hits = 0
moonlet.resource{ path = "/count", post = function() hits = hits + 1; return moonlet.CHANGED, tostring(hits) end,
  get = function() return moonlet.CONTENT, tostring(hits) end }
local n = 0
local clock = moonlet.resource{ path = "/clock", obs = true,
  get = function() return moonlet.CONTENT, tostring(n) end }
moonlet.every(0.2, function() n = n + 1; clock:notify() end)
