-- badsyntax.lua -- a syntax error on line 4 (test_lua.py expects "badsyntax.lua:4:")
local moonlet = require "moonlet"
moonlet.resource{ path = "/never", get = function(req) return "never" end }
local x = = 1
