-- wrk script for `benches/serve/load.sh`: each request POSTs one JPEG to /invocations,
-- cycling through the files listed (one path a line) in $JPEG_LIST. Every wrk thread reads
-- the list into memory once, so the load test measures the server, not the disk.
local files = {}
for path in io.lines(os.getenv("JPEG_LIST")) do
  local f = assert(io.open(path, "rb"))
  files[#files + 1] = f:read("*a")
  f:close()
end
assert(#files > 0, "JPEG_LIST names no files")

local headers = { ["Content-Type"] = "image/jpeg", ["Accept"] = "application/json" }
local i = 0

request = function()
  i = i % #files + 1
  return wrk.format("POST", "/invocations", headers, files[i])
end

-- wrk prints error counts only when they are not zero; say so either way.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("errors: connect %d, read %d, write %d, timeout %d, non-2xx %d\n",
    e.connect, e.read, e.write, e.timeout, e.status))
end
