-- block_res.lua -- resources for the block-wise suite (tests/integration/test_block.py) and
-- the block-wise benchmark (tests/bench/block.sh). Handlers see whole bodies: the core
-- slices large answers into Block2 blocks and reassembles Block1 uploads (RFC 7959).
--
--   /b/big     GET  BIG bytes (default 256 KiB) of xorshift32 output from SEED (below)
--   /b/small   GET  100 bytes (fits one block)
--   /b/mut     GET  5000 bytes generated from the current version; PUT "N" sets the version
--   /b/tagged  GET  the same bytes as /b/mut, with the handler's own ETag "v<version>"
--   /b/up      PUT, POST  store the body (kept in a list), answer 2.04 with its index;
--              GET  the last body; ?i=N the N-th; ?n the number of bodies stored
--   /b/up2     PUT/GET like /b/up (a second resource, the same list)
--   /b/echo    POST answers 2.04 with the body followed by the body reversed
--   /b/slow    GET  sleeps ?s= seconds (default 0.3), then answers the first ?n= bytes
--              (default 20000) of /b/big: a deferred answer, sliced like any other;
--              POST sleeps too, then answers like /b/echo
--   /b/runs    GET  handler runs: "big=N mut=N tagged=N echo=N slow=N up=N"
--
-- Settings: -s block_res.seed=N (default 2463534242), -s block_res.big=BYTES.
-- The generator: x ^= x << 13; x ^= x >> 17; x ^= x << 5 (32 bits), each x appended as
-- 4 little-endian bytes -- test_block.py computes the same bytes.
local moonlet = require "moonlet"

local function prng(seed, n)
  local parts, x = {}, seed & 0xffffffff
  if x == 0 then x = 1 end
  for i = 1, (n + 3) // 4 do
    x = x ~ ((x << 13) & 0xffffffff); x = x ~ (x >> 17); x = x ~ ((x << 5) & 0xffffffff)
    parts[i] = string.pack("<I4", x)
  end
  return table.concat(parts):sub(1, n)
end

local BIG = math.tointeger(tonumber(moonlet.conf("big", "262144")))
local big = prng(math.tointeger(tonumber(moonlet.conf("seed", "2463534242"))), BIG)
local MUT_SIZE = 5000
local runs = { big = 0, mut = 0, tagged = 0, echo = 0, slow = 0, up = 0 }
local version = 1
local bodies = {}

-- the seed of /b/mut's content at a version (never 0)
local function mut_seed(v)
  return (v * 2654435761 + 12345) & 0xffffffff
end

moonlet.resource{ path = "/b/big", ct = moonlet.ct.octets, get = function()
  runs.big = runs.big + 1
  return moonlet.CONTENT, big
end }

moonlet.resource{ path = "/b/small", get = function()
  return moonlet.CONTENT, big:sub(1, 100), { ct = moonlet.ct.octets }
end }

local function set_version(req)
  local v = math.tointeger(tonumber(req.payload))
  if not v or v < 0 then return moonlet.BAD_REQUEST, "a version number" end
  version = v
  return moonlet.CHANGED
end

moonlet.resource{ path = "/b/mut",
  get = function()
    runs.mut = runs.mut + 1
    return moonlet.CONTENT, prng(mut_seed(version), MUT_SIZE), { ct = moonlet.ct.octets }
  end,
  put = set_version,
}

moonlet.resource{ path = "/b/tagged", get = function()
  runs.tagged = runs.tagged + 1
  return moonlet.CONTENT, prng(mut_seed(version), MUT_SIZE),
         { ct = moonlet.ct.octets, etag = "v" .. version }
end }

local function store(req)
  runs.up = runs.up + 1
  bodies[#bodies + 1] = req.payload
  return moonlet.CHANGED, tostring(#bodies)
end

local function fetch(req)
  if req.query.n then return moonlet.CONTENT, tostring(#bodies) end
  local i = math.tointeger(tonumber(req.query.i or #bodies))
  local body = i and bodies[i]
  if not body then return moonlet.NOT_FOUND, "no such body" end
  return moonlet.CONTENT, body, { ct = moonlet.ct.octets }
end

moonlet.resource{ path = "/b/up", put = store, post = store, get = fetch }
moonlet.resource{ path = "/b/up2", put = store, get = fetch }

moonlet.resource{ path = "/b/echo", post = function(req)
  runs.echo = runs.echo + 1
  return moonlet.CHANGED, req.payload .. req.payload:reverse(), { ct = moonlet.ct.octets }
end }

moonlet.resource{ path = "/b/slow",
  get = function(req)
    runs.slow = runs.slow + 1
    moonlet.sleep(tonumber(req.query.s or "0.3"))
    local n = math.tointeger(tonumber(req.query.n or "20000")) or 20000
    return moonlet.CONTENT, big:sub(1, n), { ct = moonlet.ct.octets }
  end,
  post = function(req)
    runs.slow = runs.slow + 1
    moonlet.sleep(tonumber(req.query.s or "0.3"))
    return moonlet.CHANGED, req.payload .. req.payload:reverse(), { ct = moonlet.ct.octets }
  end,
}

moonlet.resource{ path = "/b/runs", get = function()
  return moonlet.CONTENT, string.format("big=%d mut=%d tagged=%d echo=%d slow=%d up=%d",
    runs.big, runs.mut, runs.tagged, runs.echo, runs.slow, runs.up)
end }
