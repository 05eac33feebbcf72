-- badresource.lua -- a resource declaration with a path that is not absolute, line 3
local moonlet = require "moonlet"
moonlet.resource{ path = "nopath", get = function(req) return "never" end }
