-- many.lua -- 1,000 resources for ws.sh's /metrics scrape: /r/1 .. /r/1000, each GET
-- answering "r<n>" (a server with a resource tree of that size, not a handler to time).
local moonlet = require "moonlet"
for i = 1, 1000 do
  local body = "r" .. i
  moonlet.resource{
    path = "/r/" .. i, rt = "bench", ct = moonlet.ct.text,
    get = function() return moonlet.CONTENT, body end,
  }
end
