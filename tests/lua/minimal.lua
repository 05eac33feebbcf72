local moonlet = require "moonlet"
moonlet.resource{ path = "/v", rt = "demo", get = function(req) return moonlet.CONTENT, "one" end }
