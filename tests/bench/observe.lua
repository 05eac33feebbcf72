-- observe.lua -- the server side of obs-bench: /obs/value is observable ("v=<n>"); a POST
-- to /obs/bump adds one and notifies once.
local moonlet = require "moonlet"
local n = 0
moonlet.resource{ path = "/obs/value", obs = true,
                  get = function() return moonlet.CONTENT, "v=" .. n end }
moonlet.resource{ path = "/obs/bump",
                  post = function() n = n + 1; moonlet.notify("/obs/value"); return moonlet.CHANGED end }
