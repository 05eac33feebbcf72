-- toplevel_error.lua -- a runtime error at the top level, line 4
local moonlet = require "moonlet"
moonlet.resource{ path = "/never", get = function(req) return "never" end }
error("top level failure")
