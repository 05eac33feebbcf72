-- sandbox.lua -- escape attempts (lua/README.md "Scripts run in a sandbox"). POST /s/probe
-- with a JSON configuration runs every attempt under pcall and answers { name = allowed };
-- /s/detail?name= tells what it returned or raised. Nothing harmful runs when allowed:
-- os.execute / io.popen are called (with "exit 0") only when cfg.call is true.
--   cfg = { call = bool, passwd = "/etc/passwd", beside = "<dir>/sandbox_mod.lua",
--           dir = "<dir>", cmod = "cjson", cmod_path = ".../cjson.so", chunk_hex = "1b4c75..." }
local moonlet = require "moonlet"

local function unhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end

local details = {}

local function probe(cfg)
  local res = {}
  local function record(name, allowed, detail)
    res[name] = allowed and true or false
    details[name] = tostring(detail)
  end
  local function attempt(name, f, judge)
    local ok, a, b = pcall(f)
    if not ok then record(name, false, a) else record(name, judge(a, b), a == nil and b or a) end
  end
  local function fn(v) return type(v) == "function" end

  -- os.execute, io.popen
  local exec = os and os.execute
  if not fn(exec) then record("os.execute", false, "absent")
  elseif cfg.call then attempt("os.execute", function() return exec("exit 0") end, function(a) return a ~= nil end)
  else record("os.execute", true, "present (not called)") end
  local popen = io and io.popen
  if not fn(popen) then record("io.popen", false, "absent")
  elseif cfg.call then
    attempt("io.popen", function() local f = popen("exit 0"); if f then f:close() end; return f end,
            function(a) return a ~= nil end)
  else record("io.popen", true, "present (not called)") end

  -- package.loadlib of a real C library
  local loadlib = package and package.loadlib
  if not fn(loadlib) then record("loadlib", false, "absent")
  else attempt("loadlib", function() return loadlib(cfg.cmod_path, "*") end,
               function(a) return a ~= nil and a ~= false end) end

  -- debug
  if type(debug) ~= "table" then
    for _, n in ipairs({ "debug", "getinfo", "sethook", "getregistry" }) do record(n, false, "absent") end
  else
    local any = false
    for _, v in pairs(debug) do if fn(v) then any = true end end
    record("debug", any, "debug table")
    attempt("getinfo", function() return debug.getinfo(1) end, function(a) return type(a) == "table" end)
    attempt("sethook", function() debug.sethook(); return true end, function(a) return a end)
    attempt("getregistry", function() return debug.getregistry() end, function(a) return type(a) == "table" end)
  end

  -- string.dump (also through the string metatable)
  attempt("string.dump", function() return string.dump(function() return 1 end) end,
          function(a) return type(a) == "string" end)
  attempt("strmeta.dump", function() return ("").dump(function() return 1 end) end,
          function(a) return type(a) == "string" end)

  -- load: text chunks only
  local chunk = unhex(cfg.chunk_hex)
  attempt("load.bin", function() return load(chunk) end, fn)
  attempt("load.bin.b", function() return load(chunk, "=bin", "b") end, fn)
  attempt("load.bin.bt", function() return load(chunk, "=bin", "bt") end, fn)
  attempt("load.reader", function()
    local done = false
    return load(function() if done then return nil end; done = true; return chunk end)
  end, fn)
  attempt("load.text", function() local f = load("return 1 + 1"); return f and f() end,
          function(a) return a == 2 end)

  -- files
  attempt("open.passwd", function() return io.open(cfg.passwd) end, function(a) return a ~= nil end)
  attempt("open.dotdot", function()
    return io.open(cfg.dir .. "/../../../../../../../../etc/passwd")
  end, function(a) return a ~= nil end)
  attempt("lines.passwd", function() return io.lines(cfg.passwd) end, fn)
  attempt("open.beside", function()
    local f = io.open(cfg.beside)
    if not f then return nil end
    local line = f:read("l"); f:close(); return line
  end, function(a) return a ~= nil end)
  attempt("lines.beside", function()
    for line in io.lines(cfg.beside) do return line end
  end, function(a) return a ~= nil end)

  -- dofile / loadfile (of the harmless module beside the script)
  attempt("dofile", function() return dofile(cfg.beside) end, function(a) return type(a) == "table" end)
  attempt("loadfile", function() return loadfile(cfg.beside) end, fn)

  -- require: a C module must be refused, a Lua module beside the script found
  attempt("require.c", function() return require(cfg.cmod) end, function(a) return a ~= nil end)
  attempt("require.lua", function() return require("sandbox_mod") end,
          function(a) return type(a) == "table" and a.answer == 42 end)
  return res
end

-- POST /s/probe -> { name = allowed } (compact: a response fits one datagram);
-- GET /s/detail?name=NAME -> what the attempt returned or raised; GET /s/modview -> the
-- module's own view of the sandbox
moonlet.resource{ path = "/s/probe", post = function(req)
  local cfg = moonlet.json.decode(req.payload)
  return moonlet.CONTENT, moonlet.json.encode(probe(cfg)), { ct = moonlet.ct.json }
end }
moonlet.resource{ path = "/s/detail", get = function(req)
  return moonlet.CONTENT, (details[req.query.name] or "?"):sub(1, 900)
end }
moonlet.resource{ path = "/s/modview", get = function(req)
  local ok, mod = pcall(require, "sandbox_mod")
  if not ok then return moonlet.CONTENT, moonlet.json.encode{ err = tostring(mod) }, { ct = moonlet.ct.json } end
  return moonlet.CONTENT, moonlet.json.encode(mod), { ct = moonlet.ct.json }
end }

-- a binary chunk of `return 42` (works only without the sandbox)
moonlet.resource{ path = "/s/dump", get = function(req)
  return moonlet.CONTENT, string.dump(function() return 42 end), { ct = moonlet.ct.octets }
end }

-- the body is a module name: { ok, answer | err }
moonlet.resource{ path = "/s/require", post = function(req)
  local ok, m = pcall(require, req.payload)
  local r = { ok = ok }
  if ok and type(m) == "table" then r.answer = m.answer else r.err = tostring(m) end
  return moonlet.CONTENT, moonlet.json.encode(r), { ct = moonlet.ct.json }
end }

-- the body is a path: { ok, line | err } (the first line of the file)
moonlet.resource{ path = "/s/read", post = function(req)
  local ok, f, e = pcall(io.open, req.payload)
  local r = { ok = ok and f ~= nil }
  if r.ok then r.line = f:read("l"); f:close() else r.err = tostring(ok and e or f) end
  return moonlet.CONTENT, moonlet.json.encode(r), { ct = moonlet.ct.json }
end }

-- os.getenv (harmless; asserted only with -s lua.sandbox=off)
moonlet.resource{ path = "/s/getenv", get = function(req)
  local ok, v = pcall(function() return os.getenv(req.query.name) end)
  return moonlet.CONTENT, moonlet.json.encode{ ok = ok, v = tostring(v) }, { ct = moonlet.ct.json }
end }
