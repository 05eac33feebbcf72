-- plugtest.lua -- the ETSI CoAP plugtest resource set, as Californium's plugtest server
-- offers it, for the test descriptions:
--   TD_COAP_CORE_01..23  /test (each method, CON and NON), /separate, /seg1/seg2/seg3,
--                        /query, /location-query, /multi-format, /validate, /create1
--                        (ping and message-layer tests are the core's alone)
--   TD_COAP_LINK_01..09  /.well-known/core filtered over /link1..3, /path, /large...
--   TD_COAP_BLOCK_*      /large, /large-update, /large-create (POST creates
--                        /large-create/N), /large-post
--   TD_COAP_OBS_*        /obs, /obs-non
-- The core does block-wise transfer (RFC 7959) for the large resources and the 1.4 KB
-- /.well-known/core, and Observe (RFC 7641): /obs notifies in CON messages, /obs-non in
-- NON messages (with the core's periodic CON check).
--
--   build/moonlet examples/plugtest.lua
local moonlet = require "moonlet"
local ct = moonlet.ct

-- A stored representation with an ETag that changes on every write (RFC 7252 §5.10.6).
local version = 0
local function document(body, format)
  version = version + 1
  return { body = body, ct = format or ct.text, etag = string.pack(">I4", version) }
end

local function serve(req, doc, opts)
  if not doc then return moonlet.NOT_FOUND, "does not exist" end
  if req.accept and req.accept ~= doc.ct then return moonlet.NOT_ACCEPTABLE end
  opts = opts or {}
  opts.ct, opts.etag = doc.ct, doc.etag
  return moonlet.CONTENT, doc.body, opts
end

-- RFC 7252 §5.10.8: one If-Match value must match the current representation (an empty
-- one matches any); If-None-Match requires that there is none.
local function precondition(req, doc)
  local tags = req:options("If-Match")
  local matched = #tags == 0
  for _, tag in ipairs(tags) do
    matched = matched or (doc ~= nil and (tag == "" or tag == doc.etag))
  end
  return matched and not (doc and req:option("If-None-Match"))
end

-- Handlers do not see the message type or Message ID (the core keeps them), so the
-- payload describes what they do see.
local function describe(req)
  return ("%s %s from %s: %d byte(s)%s"):format(req.method, req.path, req.peer, #req.payload,
                                                 req.ct and ", ct " .. req.ct or "")
end

moonlet.resource{
  path = "/test", title = "Default test resource",
  get = function(req) return moonlet.CONTENT, describe(req), { ct = ct.text } end,
  post = function(req)
    return moonlet.CREATED, describe(req),
           { ct = ct.text, location = "/location1/location2/location3" }
  end,
  put = function(req) return moonlet.CHANGED, describe(req), { ct = ct.text } end,
  delete = function(req) return moonlet.DELETED, describe(req), { ct = ct.text } end,
}

-- Slower than separate_after (0.5 s by default): the core sends the empty ACK first and
-- this answer later as a separate response (RFC 7252 §5.2.2).
moonlet.resource{
  path = "/separate", title = "Resource which cannot be served immediately", ct = ct.text,
  get = function()
    moonlet.sleep(1)
    return "separate response, one second later"
  end,
}

moonlet.resource{
  path = "/seg1/seg2/seg3", title = "Long path resource", ct = ct.text,
  get = function(req) return table.concat(req.segments, " / ") end,
}

moonlet.resource{
  path = "/query", title = "Resource accepting query parameters", ct = ct.text,
  get = function(req) return req.query_raw end,
}

moonlet.resource{
  path = "/location-query",
  title = "Perform POST transaction with responses containing several Location-Query options",
  post = function()
    return moonlet.CREATED, "", { ["Location-Query"] = { "first=1", "second=2" } }
  end,
}

-- The core picks the Content-Format from Accept (default: the first one) and answers
-- 4.06 for any other.
moonlet.resource{
  path = "/multi-format", title = "Resource that exists in different content formats",
  ct = { ct.text, ct.xml },
  get = function(req)
    if req.accept == ct.xml then
      return ('<msg method="%s" accept="%d">multi-format</msg>'):format(req.method, req.accept)
    end
    return "multi-format, text/plain"
  end,
}

local validate = document("initial content of /validate")
moonlet.resource{
  path = "/validate", title = "Resource which varies",
  get = function(req)
    for _, tag in ipairs(req:options("ETag")) do
      if tag == validate.etag then return moonlet.VALID, "", { etag = tag } end
    end
    return serve(req, validate)
  end,
  put = function(req)
    if not precondition(req, validate) then return moonlet.PRECONDITION_FAILED end
    validate = document(req.payload, req.ct)
    return moonlet.CHANGED, "", { etag = validate.etag }
  end,
}

-- Does not exist until the first PUT; DELETE removes it again so the test can be rerun.
local create1
moonlet.resource{
  path = "/create1", title = "Resource which does not exist yet (to perform atomic PUT)",
  get = function(req) return serve(req, create1) end,
  put = function(req)
    if not precondition(req, create1) then return moonlet.PRECONDITION_FAILED end
    local code = create1 and moonlet.CHANGED or moonlet.CREATED
    create1 = document(req.payload, req.ct)
    return code
  end,
  delete = function() create1 = nil end,
}

-- Observable clocks, rewritten every 5 s. A PUT replaces the value until the next tick
-- and notifies; a DELETE notifies 4.04 (which ends the observations) until the next tick
-- recreates it.
local clocks = {}
local function clock(path, title, con)
  local c = { doc = document(os.date("!%H:%M:%S")) }
  c.resource = moonlet.resource{
    path = path, rt = "observe", obs = true, title = title, notify_con = con,
    get = function(req) return serve(req, c.doc, { max_age = 5 }) end,
    put = function(req)
      local code = c.doc and moonlet.CHANGED or moonlet.CREATED
      c.doc = document(req.payload, req.ct)
      c.resource:notify()
      return code
    end,
    delete = function()
      c.doc = nil
      c.resource:notify()
    end,
  }
  clocks[#clocks + 1] = c
end
clock("/obs", "Observable resource which changes every 5 seconds", true)
clock("/obs-non", "Observable resource which changes every 5 seconds, notified as NON")
moonlet.every(5, function()
  for _, c in ipairs(clocks) do
    c.doc = document(os.date("!%H:%M:%S"))
    c.resource:notify()
  end
end)

-- Larger than one 1024-byte block: twenty lines of 64 bytes, each saying where it starts, so
-- a block-wise client shows which block is which.
local lines = {}
for i = 1, 20 do
  local line = ("[%04d] line %02d of 20 of a resource for block-wise"):format((i - 1) * 64, i)
  lines[i] = ("%-63s\n"):format(line)
end
local LARGE = table.concat(lines)

moonlet.resource{
  path = "/large", rt = "block", sz = #LARGE, ct = ct.text, title = "Large resource",
  get = function() return LARGE end,
}

local large_update = document(LARGE)
moonlet.resource{
  path = "/large-update", rt = "block",
  title = "Large resource that can be updated using PUT method",
  get = function(req) return serve(req, large_update) end,
  put = function(req)
    large_update = document(req.payload, req.ct)
    return moonlet.CHANGED
  end,
}

-- TD_COAP_BLOCK_04: a POST (block-wise) creates /large-create/N, a run-time resource
-- (2.01 Created with Location-Path, RFC 7252 §5.8.2) that serves what was uploaded and can
-- be deleted; the last eight are kept, an older one is removed.
local created, last = {}, 0
moonlet.resource{
  path = "/large-create", rt = "block",
  title = "Large resource that can be created using POST method",
  post = function(req)
    last = last + 1
    local id, doc = last, document(req.payload, req.ct)
    local h, err = moonlet.resource{
      path = "/large-create/" .. id, rt = "block", title = "Created by a POST",
      get = function(r) return serve(r, doc) end,
      delete = function()
        created[id]:remove()
        created[id] = nil
        return moonlet.DELETED
      end,
    }
    if not h then return moonlet.SERVICE_UNAVAILABLE, err end
    created[id] = h
    if created[id - 8] then
      created[id - 8]:remove()
      created[id - 8] = nil
    end
    return moonlet.CREATED, "", { location = "/large-create/" .. id }
  end,
}

moonlet.resource{
  path = "/large-post", rt = "block", title = "Handle POST with two-way block-wise transfer",
  post = function(req) return moonlet.CHANGED, req.payload, { ct = req.ct } end,
}

local function link(path, rt, iface)
  moonlet.resource{
    path = path, rt = rt, iface = iface, ct = ct.text, title = "Link test resource",
    get = function() return "link test resource " .. path end,
  }
end
link("/link1", { "Type1", "Type2" }, "If1")
link("/link2", { "Type2", "Type3" }, "If2")
link("/link3", { "Type1", "Type3" }, "foo")

-- /path describes its children in link-format: discovery arranged hierarchically.
local children = {}
for i = 1, 3 do
  local sub = moonlet.resource{
    path = "/path/sub" .. i, ct = ct.text, title = "Path sub-resource " .. i,
    get = function(req) return req.path end,
  }
  children[i] = ("<%s>;ct=0"):format(sub.path)
end
moonlet.resource{
  path = "/path", ct = ct.link_format, title = "Hierarchical link description entry",
  get = function() return table.concat(children, ",") end,
}
