-- sandbox_mod.lua -- a module beside sandbox.lua: `require "sandbox_mod"` must find it, and it
-- runs in the same sandbox (it reports what it can see). Also read by io.open / dofile probes.
return {
  answer = 42,
  sees_os_execute = (os ~= nil and os.execute ~= nil),
  sees_io_popen = (io ~= nil and io.popen ~= nil),
  sees_debug = (debug ~= nil),
  sees_string_dump = (string.dump ~= nil),
}
