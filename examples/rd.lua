-- rd.lua -- a CoRE Resource Directory (RFC 9176) in one script: devices register the
-- links of their resources, clients look them up. Each registration is a resource created
-- at run time, /rd/N, which the device refreshes, reads back or deletes.
--
--   POST /rd?ep=NAME[&d=SECTOR][&lt=SECONDS][&base=URI]   body: link-format (ct 40)
--        -> 2.01 Created, Location-Path rd/N (RFC 9176 §5.3); the same ep and d again
--           replaces the older registration
--   POST /rd/N[?lt=..&base=..]   refresh (an empty body), 2.04 (§5.3.1)
--   GET  /rd/N                   the registered links (§5.3.3 as RFC 9176 Appendix A)
--   DELETE /rd/N                 2.02 (§5.3.2)
--   GET  /rd-lookup/res?rt=...   links of the registered resources, absolute, with their
--                                anchor (§6.2); filters on any link attribute, ep, d,
--                                a trailing "*" matches a prefix (RFC 6690 §4.1)
--   GET  /rd-lookup/ep?ep=...    the registrations, as links to /rd/N (§6.3)
--
-- A registration expires after its lifetime (lt, default 90000 s) unless refreshed. The
-- RD serves at most rd.max registrations (default 1000; -s rd.max=N) and answers 5.03
-- beyond; the core's runtime_resources bounds it too.
--
--   build/moonlet examples/rd.lua
--   coap-client-notls -m post -t 40 -e '</temp>;rt="temperature";obs' \
--       'coap://[::1]/rd?ep=node1'
--   coap-client-notls 'coap://[::1]/rd-lookup/res?rt=temperature'
local moonlet = require "moonlet"
local LINK = moonlet.ct.link_format
local MAX = tonumber(moonlet.conf("max", "1000"))
local DEFAULT_LT = 90000

local regs, count, next_id = {}, 0, 0   -- id -> registration

-- RFC 6690 §2 output: a value is written as a quoted-string, '"' and '\' escaped
local function quote(v)
  return '"' .. v:gsub('[\\"]', "\\%0") .. '"'
end

local function link(target, attrs)
  local out = { "<" .. target .. ">" }
  for _, a in ipairs(attrs) do
    out[#out + 1] = a[2] == true and a[1] or a[1] .. "=" .. quote(a[2])
  end
  return table.concat(out, ";")
end

-- The attributes of a parsed link (req.body of a link-format body) as an ordered list.
local function attr_list(attrs)
  local list = {}
  for name, v in pairs(attrs) do
    if type(v) == "table" then
      for _, one in ipairs(v) do list[#list + 1] = { name, one } end
    else
      list[#list + 1] = { name, v }
    end
  end
  table.sort(list, function(a, b) return a[1] < b[1] end)
  return list
end

-- RFC 6690 §4.1 / RFC 9176 §6: name=value, a value ending in '*' matches as a prefix;
-- space-separated attributes (rt, if) match one of their tokens.
local function match(value, want)
  if value == nil then return false end
  if value == true then value = "" end
  local prefix = want:sub(-1) == "*"
  local w = prefix and want:sub(1, -2) or want
  local function one(v)
    return prefix and v:sub(1, #w) == w or v == w
  end
  if one(value) then return true end
  for token in value:gmatch("%S+") do
    if one(token) then return true end
  end
  return false
end

local function filters_of(req, skip)
  local f = {}
  for k, v in pairs(req.query) do
    if not skip[k] then
      if type(v) == "table" then v = v[1] end
      f[#f + 1] = { k, v == true and "*" or v }
    end
  end
  return f
end

local function source_base(req)
  return "coap://" .. req.peer
end

local function unregister(reg)
  if reg.timer then reg.timer:cancel() end
  reg.handle:remove()
  regs[reg.id] = nil
  count = count - 1
end

local function arm(reg)
  if reg.timer then reg.timer:cancel() end
  reg.timer = moonlet.after(reg.lt, function()
    moonlet.log("info", "registration of", reg.ep, "expired")
    unregister(reg)
  end)
end

-- lt and base from the query of a registration or a refresh (§5.3, §5.3.1)
local function params(req, reg)
  local lt = req.query.lt
  if lt ~= nil then
    lt = math.tointeger(tonumber(lt))
    if not lt or lt < 1 or lt > 4294967295 then return nil, "lt must be 1..2^32-1" end
    reg.lt = lt
  end
  if type(req.query.base) == "string" then reg.base = req.query.base end
  return true
end

local function register(req)
  local ep = req.query.ep
  if type(ep) ~= "string" or ep == "" then
    return moonlet.BAD_REQUEST, "ep is required (RFC 9176, section 5.3)"
  end
  if req.ct ~= LINK then
    return moonlet.UNSUPPORTED_CONTENT_FORMAT, "the links come as link-format (40)"
  end
  local d = type(req.query.d) == "string" and req.query.d or nil
  for _, old in pairs(regs) do          -- the same endpoint registering again: replaced
    if old.ep == ep and old.d == d then unregister(old) end
  end
  if count >= MAX then return moonlet.SERVICE_UNAVAILABLE, "directory full" end
  local links = req.body                -- malformed link-format: the core answered 4.00
  next_id = next_id + 1
  local reg = { id = next_id, ep = ep, d = d, lt = DEFAULT_LT, base = source_base(req),
                links = links }
  local ok, err = params(req, reg)
  if not ok then return moonlet.BAD_REQUEST, err end
  local path = "/rd/" .. reg.id
  reg.handle, err = moonlet.resource{ path = path, hidden = true,
    get = function()
      local out = {}
      for i, l in ipairs(reg.links) do out[i] = link(l.target, attr_list(l.attrs)) end
      return moonlet.CONTENT, table.concat(out, ","), { ct = LINK }
    end,
    post = function(r)             -- a refresh (§5.3.1)
      local fine, why = params(r, reg)
      if not fine then return moonlet.BAD_REQUEST, why end
      arm(reg)
      return moonlet.CHANGED
    end,
    delete = function()
      unregister(reg)
      return moonlet.DELETED
    end,
  }
  if not reg.handle then return moonlet.SERVICE_UNAVAILABLE, err end
  regs[reg.id], count = reg, count + 1
  arm(reg)
  return moonlet.CREATED, nil, { location = path }
end

moonlet.resource{ path = "/rd", rt = "core.rd", ct = LINK, post = register }

-- §6.2: every registered link that passes the filters, made absolute with the base of
-- its registration, which is also its anchor
moonlet.resource{ path = "/rd-lookup/res", rt = "core.rd-lookup-res", ct = LINK,
  get = function(req)
    local filters, out = filters_of(req, { page = true, count = true }), {}
    for _, reg in pairs(regs) do
      for _, l in ipairs(reg.links) do
        local ok = true
        for _, f in ipairs(filters) do
          local name, want = f[1], f[2]
          local v = name == "ep" and reg.ep or name == "d" and reg.d or
                    name == "href" and l.target or l.attrs[name]
          if type(v) == "table" then
            local any = false
            for _, one in ipairs(v) do any = any or match(one, want) end
            ok = ok and any
          else
            ok = ok and match(v, want)
          end
        end
        if ok then
          local attrs = attr_list(l.attrs)
          attrs[#attrs + 1] = { "anchor", reg.base }
          out[#out + 1] = { reg.id, link(reg.base .. l.target, attrs) }
        end
      end
    end
    table.sort(out, function(a, b) return a[1] < b[1] end)
    for i, o in ipairs(out) do out[i] = o[2] end
    return moonlet.CONTENT, table.concat(out, ","), { ct = LINK }
  end }

-- §6.3: the registrations themselves
moonlet.resource{ path = "/rd-lookup/ep", rt = "core.rd-lookup-ep", ct = LINK,
  get = function(req)
    local filters, out = filters_of(req, { page = true, count = true }), {}
    for id, reg in pairs(regs) do
      local attrs = { { "ep", reg.ep }, { "base", reg.base }, { "lt", tostring(reg.lt) } }
      if reg.d then attrs[#attrs + 1] = { "d", reg.d } end
      local ok = true
      for _, f in ipairs(filters) do
        local v
        for _, a in ipairs(attrs) do if a[1] == f[1] then v = a[2] end end
        ok = ok and match(v, f[2])
      end
      if ok then out[#out + 1] = { id, link("/rd/" .. id, attrs) } end
    end
    table.sort(out, function(a, b) return a[1] < b[1] end)
    for i, o in ipairs(out) do out[i] = o[2] end
    return moonlet.CONTENT, table.concat(out, ","), { ct = LINK }
  end }
