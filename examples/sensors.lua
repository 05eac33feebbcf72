-- sensors.lua -- the discovery example of the CoAP chapter: a small device whose
-- sensors, LED and sampling interval are found through /.well-known/core (RFC 6690).
--
--   build/moonlet examples/sensors.lua
--   coap-client-notls -m get 'coap://[::1]/.well-known/core?if=sensor'
local moonlet = require "moonlet"

local state = moonlet.state          -- kept across a hot reload
state.led = state.led or "off"
state.interval = state.interval or 5 -- seconds between samples

-- Simulated readings: a slow sine (ten-minute period) plus a little noise.
local function sample(s)
  local v = s.base + s.swing * math.sin(2 * math.pi * (moonlet.now() + s.phase) / 600)
  v = v + (math.random() - 0.5) * s.swing / 10
  return math.floor(v * 10 + 0.5) / 10
end

local sensors = {}

local function sensor(name, s)
  s.phase = #sensors * 100
  s.value = sample(s)
  s.resource = moonlet.resource{
    path = "/sensors/" .. name, rt = s.rt, iface = s.iface, obs = s.obs, title = s.title,
    ct = { moonlet.ct.text, moonlet.ct.json },
    get = function(req)
      if req.accept == moonlet.ct.json then
        return moonlet.CONTENT, { value = s.value, unit = s.unit }
      end
      return moonlet.CONTENT, ("%.1f"):format(s.value)
    end,
  }
  sensors[#sensors + 1] = s
end

sensor("temp", { rt = "temperature", iface = "sensor", obs = true, title = "Room temperature",
                 unit = "Cel", base = 21, swing = 2 })
sensor("humidity", { rt = "humidity", iface = "sensor", obs = true, title = "Relative humidity",
                     unit = "%RH", base = 45, swing = 8 })
sensor("pressure", { rt = "pressure", iface = "sensor", title = "Air pressure",
                     unit = "hPa", base = 1013, swing = 4 })
sensor("temp_outdoor", { rt = "temperature", title = "Outdoor temperature",
                         unit = "Cel", base = 8, swing = 6 })

local function tick()
  for _, s in ipairs(sensors) do
    local v = sample(s)
    if v ~= s.value then
      s.value = v
      if s.obs then s.resource:notify() end
    end
  end
end

local timer = moonlet.every(state.interval, tick)

moonlet.resource{
  path = "/actuators/led", rt = "light", iface = "actuator", title = "LED", ct = moonlet.ct.text,
  get = function() return moonlet.CONTENT, state.led end,
  put = function(req)
    if req.payload ~= "on" and req.payload ~= "off" then
      return moonlet.BAD_REQUEST, 'led must be "on" or "off"'
    end
    state.led = req.payload
    return moonlet.CHANGED
  end,
}

moonlet.resource{
  path = "/config/interval", rt = "config", iface = "parameter", ct = moonlet.ct.text,
  title = "Sampling interval (s)",
  get = function() return moonlet.CONTENT, tostring(state.interval) end,
  put = function(req)
    local n = math.tointeger(tonumber(req.payload))
    if not n or n < 1 or n > 3600 then
      return moonlet.BAD_REQUEST, "interval must be an integer 1..3600"
    end
    state.interval = n
    timer:cancel()
    timer = moonlet.every(n, tick)
    return moonlet.CHANGED
  end,
}
