-- hello.lua -- the Lua twin of examples/hello/hello.c: the same three resources.
--   build/moonlet examples/hello.lua
--   coap-client-notls -m get coap://[::1]/hello
local moonlet = require "moonlet"

moonlet.resource{
  path = "/hello", rt = "hello", ct = moonlet.ct.text, title = "Hello",
  get = function() return moonlet.CONTENT, "Hello, world" end,
}

moonlet.resource{
  path = "/echo", rt = "echo", title = "Echo",
  post = function(req) return moonlet.CHANGED, req.payload, { ct = req.ct } end,
}

moonlet.resource{
  path = "/slow", rt = "slow", ct = moonlet.ct.text, title = "Slow",
  get = function()
    moonlet.sleep(3)            -- the core sends the empty ACK, then this as a separate CON
    return moonlet.CONTENT, "slow response"
  end,
}
