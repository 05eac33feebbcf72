-- sleep_toplevel.lua -- moonlet.sleep at the top level is an error (line 4)
local moonlet = require "moonlet"
moonlet.resource{ path = "/never", get = function(req) return "never" end }
moonlet.sleep(1)
