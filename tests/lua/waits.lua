-- waits.lua -- moonlet.sleep / wait / signal and timers (lua/README.md "Waiting without
-- blocking", "Timers"). Timer effects are observable through /w/timers (JSON of the
-- counters) and through events the callbacks signal ("tick", "after", ...), which a test
-- waits for with GET /w/wait?ev=NAME&t=SECONDS.
local moonlet = require "moonlet"
local st = moonlet.state
st.ticks, st.after_fired, st.cancelled_fired, st.err_ticks, st.timer_slept = 0, 0, 0, 0, 0
st.top_fired, st.sleep_runs, st.sleep_done = 0, 0, 0

local function json(v) return moonlet.json.encode(v) end

-- a timer started while the script loads
moonlet.after(0.1, function() st.top_fired = st.top_fired + 1 end)

moonlet.resource{ path = "/w/sleep", ct = moonlet.ct.text, get = function(req)
  st.sleep_runs = st.sleep_runs + 1
  moonlet.sleep(tonumber(req.query.s or "3"))
  st.sleep_done = st.sleep_done + 1
  return moonlet.CONTENT, "slept"
end }

moonlet.resource{ path = "/w/quick", get = function(req) return moonlet.CONTENT, "quick" end }

-- moonlet.wait(ev, t): returns the values given to signal, or nil, "timeout"
moonlet.resource{ path = "/w/wait", get = function(req)
  local t0 = moonlet.now()
  local a, b, c = moonlet.wait(req.query.ev or "ev", tonumber(req.query.t or "5"))
  return moonlet.CONTENT, json{ a = a, b = b, c = c, ta = type(a), tb = type(b), tc = type(c),
                                dt = moonlet.now() - t0 }, { ct = moonlet.ct.json }
end }

-- moonlet.signal(ev, payload, 42) -> how many waiters it woke
moonlet.resource{ path = "/w/signal", post = function(req)
  local n = moonlet.signal(req.query.ev or "ev", req.payload, 42)
  return moonlet.CHANGED, tostring(n)
end }

-- sleep/wait from a coroutine of the script's own must raise an error; the script's own
-- coroutines otherwise work as usual; pcall around a sleep is fine
moonlet.resource{ path = "/w/own", get = function(req)
  local co = coroutine.create(function() moonlet.sleep(0.01); return "slept in own coroutine" end)
  local ok, err = coroutine.resume(co)
  local co2 = coroutine.create(function() return moonlet.wait("own", 0.01) end)
  local ok2, err2 = coroutine.resume(co2)
  local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
  local seq = gen() .. "," .. gen() .. "," .. gen()
  return moonlet.CONTENT, json{ ok = ok, err = tostring(err), ok2 = ok2, err2 = tostring(err2),
                                seq = seq }, { ct = moonlet.ct.json }
end }

moonlet.resource{ path = "/w/pcall_sleep", get = function(req)
  local t0 = moonlet.now()
  local ok, err = pcall(moonlet.sleep, 0.1)
  return moonlet.CONTENT, json{ ok = ok, err = tostring(err), dt = moonlet.now() - t0 },
         { ct = moonlet.ct.json }
end }

local every_timer, err_timer
moonlet.resource{
  path = "/w/timers",
  get = function(req) return moonlet.CONTENT, json(st), { ct = moonlet.ct.json } end,
  post = function(req)
    local op = req.query.op
    if op == "every" then
      every_timer = moonlet.every(tonumber(req.query.s or "0.1"), function()
        st.ticks = st.ticks + 1
        moonlet.signal("tick", st.ticks)
      end)
    elseif op == "cancel_every" then
      every_timer:cancel()
      st.ticks_at_cancel = st.ticks
    elseif op == "after" then
      moonlet.after(tonumber(req.query.s or "0.3"), function()
        st.after_fired = st.after_fired + 1
        moonlet.signal("after", st.after_fired)
      end)
    elseif op == "after_cancel" then
      -- a timer cancelled at once never fires; a second one signals when the first was due
      local t = moonlet.after(0.2, function() st.cancelled_fired = st.cancelled_fired + 1 end)
      t:cancel()
      moonlet.after(0.4, function() moonlet.signal("cancel_check", st.cancelled_fired) end)
    elseif op == "sleepy" then
      -- a timer callback runs in its own coroutine and may sleep
      moonlet.after(0.05, function()
        local t0 = moonlet.now()
        moonlet.sleep(0.2)
        st.timer_slept = st.timer_slept + 1
        moonlet.signal("sleepy", moonlet.now() - t0)
      end)
    elseif op == "erring" then
      -- an error in a callback is logged and the timer keeps its schedule
      err_timer = moonlet.every(0.1, function()
        st.err_ticks = st.err_ticks + 1
        moonlet.signal("errtick", st.err_ticks)
        error("tick boom " .. st.err_ticks)
      end)
    elseif op == "cancel_erring" then
      err_timer:cancel()
    else
      return moonlet.BAD_REQUEST, "unknown op"
    end
    return moonlet.CHANGED, op
  end,
}
