-- firmware.lua -- over-the-air updates and log uploads, block-wise (RFC 7959): the core
-- slices the image into blocks and reassembles uploads; the handlers see whole bodies.
--
--   build/moonlet examples/firmware.lua
--   coap-client-notls -b 1024 -m get coap://[::1]/firmware/update.bin -o update.bin
--   coap-client-notls -b 512 -m put -f my.log coap://[::1]/logs/daily
--
-- Files live in moonlet.conf("dir") (default: this script's directory); another directory
-- must also be readable by the sandbox: -s firmware.dir=/srv/fw -s lua.paths=/srv/fw.
local moonlet = require "moonlet"

local dir = moonlet.conf("dir", moonlet.script_dir)
local IMAGE_SIZE = 256 * 1024

-- The image: update.bin from the directory, or (for the demo) 256 KiB generated from a
-- fixed seed, identical on every start. Its ETag is a hash of its content, which the
-- core puts on every block, so a client never mixes two versions of the image.
local function load_image()
  local f = io.open(dir .. "/update.bin", "rb")
  if f then
    local data = f:read("a")
    f:close()
    return data, "update.bin"
  end
  local parts, x = {}, 2463534242
  for i = 1, IMAGE_SIZE // 4 do
    x = x ~ ((x << 13) & 0xffffffff); x = x ~ (x >> 17); x = x ~ ((x << 5) & 0xffffffff)
    parts[i] = string.pack("<I4", x)
  end
  return table.concat(parts), "a generated demo image"
end

local image, source = load_image()
moonlet.log("info", "serving", #image, "bytes from", source)

moonlet.resource{
  path = "/firmware/update.bin", rt = "firmware", ct = moonlet.ct.octets, sz = #image,
  title = "Firmware image",
  get = function() return moonlet.CONTENT, image end,
}

-- PUT /logs/daily: the whole log at once (the core reassembled it), stored atomically:
-- written beside the target, then renamed over it.
moonlet.resource{
  path = "/logs/daily", rt = "log", title = "Daily log upload",
  put = function(req)
    local tmp, final = dir .. "/daily.log.tmp", dir .. "/daily.log"
    local f, err = io.open(tmp, "wb")
    if not f then
      return moonlet.INTERNAL_SERVER_ERROR, "cannot store the log"
    end
    f:write(req.payload)
    f:close()
    assert(os.rename(tmp, final))
    moonlet.log("info", "stored daily log,", #req.payload, "bytes")
    return moonlet.CHANGED
  end,
  get = function()
    local f = io.open(dir .. "/daily.log", "rb")
    if not f then return moonlet.NOT_FOUND end
    local data = f:read("a")
    f:close()
    return moonlet.CONTENT, data, { ct = moonlet.ct.text }
  end,
}
