-- discovery_res.lua -- resources for tests/integration/test_discovery.py (RFC 6690).
--   /sensors/temp          rt "temperature c" (two tokens), if sensor, ct 0 and 50, sz 12,
--                          obs, a title with a comma and a quote
--   /sensors/temp_outdoor  rt temperature, ct 0
--   /sensors/hum           rt humidity, if "sensor core.s"
--   /ext                   extra attributes foo="bar" and the flag "x-flag"
--   /secret                hidden: served, never listed
--   /many/rNN              40 resources with long titles: the document is over 1024 bytes
local moonlet = require "moonlet"
local function get() return moonlet.CONTENT, "v" end

moonlet.resource{ path = "/sensors/temp", rt = { "temperature", "c" }, iface = "sensor",
                  ct = { moonlet.ct.text, moonlet.ct.json }, sz = 12, obs = true,
                  title = 'Temp, "inside"', get = get }
moonlet.resource{ path = "/sensors/temp_outdoor", rt = "temperature", ct = moonlet.ct.text,
                  get = get }
moonlet.resource{ path = "/sensors/hum", rt = "humidity", iface = "sensor core.s", get = get }
moonlet.resource{ path = "/ext", attrs = { foo = "bar", ["x-flag"] = true }, get = get }
moonlet.resource{ path = "/secret", hidden = true, get = get }
for i = 1, 40 do
  moonlet.resource{ path = ("/many/r%02d"):format(i), rt = "filler",
                    title = ("Filler resource number %02d of forty"):format(i), get = get }
end
