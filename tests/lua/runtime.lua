-- runtime.lua -- resources created and removed at run time (tests/integration/
-- test_runtime.py): POST /things with a body creates /things/N (2.01, Location-Path);
-- GET answers the body (?slow=S sleeps first), PUT changes it and notifies, DELETE
-- removes it from its own handler. What exists is kept in moonlet.state, so a reloaded
-- version declares it again at its top level (-s runtime.keep=no: it does not).
-- /files/* is a subtree; /files/exact an exact resource inside it; /big/N a 2000-byte
-- run-time resource made by POST /big.
local moonlet = require "moonlet"
local state = moonlet.state
state.things = state.things or {}
state.next = state.next or 0
local handles = {}

local function thing(id)
  local h, err = moonlet.resource{ path = "/things/" .. id, rt = "thing", obs = true,
    get = function(req)
      if req.query.slow then moonlet.sleep(tonumber(req.query.slow)) end
      return moonlet.CONTENT, state.things[id] or "(gone)"
    end,
    put = function(req)
      state.things[id] = req.payload
      handles[id]:notify()
      return moonlet.CHANGED
    end,
    delete = function()
      state.things[id] = nil
      assert(handles[id]:remove())
      assert(handles[id]:remove() == nil)   -- a second time: nothing left to remove
      handles[id] = nil
      return moonlet.DELETED
    end }
  handles[id] = h
  return h, err
end

moonlet.resource{ path = "/things", rt = "collection", post = function(req)
  state.next = state.next + 1
  local id = tostring(state.next)
  state.things[id] = req.payload
  local h, err = thing(id)
  if not h then
    state.things[id] = nil
    return moonlet.SERVICE_UNAVAILABLE, err
  end
  return moonlet.CREATED, nil, { location = "/things/" .. id }
end }

if moonlet.conf("keep", "yes") == "yes" then
  for id in pairs(state.things) do thing(id) end
end

state.files = state.files or { "a.txt", { path = "dir/b%20c.txt", rt = "file", ct = 0 } }
moonlet.resource{ path = "/files/*", rt = "files", get = function(req)
  return moonlet.CONTENT, "path=" .. req.path .. " rest=" .. table.concat(req.rest, "/")
end, put = function(req)           -- PUT /files/NAME adds NAME to the children
  state.files[#state.files + 1] = table.concat(req.rest, "/")
  return moonlet.CHANGED
end, children = function() return state.files end }
moonlet.resource{ path = "/files/exact", get = function() return moonlet.CONTENT, "exact" end }

local big = {}
moonlet.resource{ path = "/big", post = function()
  local id = tostring(#big + 1)
  local body = (id .. ":"):rep(1000):sub(1, 2000)
  big[id] = moonlet.resource{ path = "/big/" .. id, get = function()
    return moonlet.CONTENT, body
  end }
  return moonlet.CREATED, nil, { location = "/big/" .. id }
end, delete = function(req)
  local id = req.query.id
  return big[id]:remove() and moonlet.DELETED or moonlet.NOT_FOUND
end }
