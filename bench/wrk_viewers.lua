-- wrk script: POST to one path as random pre-entered viewers.
-- args: <viewers file: "token session_id" per line> <path>
-- Each request signs with the viewer's own pre-minted JWT and sends its session id.
-- done() prints one line "BENCH_JSON {...}": counts by status, latency percentiles (us).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- globals: thread:get() reads a thread's globals
rows = {}
counts = {}
path = "/"

function init(args)
  for line in io.lines(args[1]) do
    local tok, sess = line:match("(%S+) (%S+)")
    if tok then rows[#rows + 1] = { tok, sess } end
  end
  path = args[2]
  math.randomseed(os.time() * 1000 + #tostring({}))
end

function request()
  local r = rows[math.random(#rows)]
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. r[1],
    ["Content-Type"] = "application/json",
  }, '{"session_id":"' .. r[2] .. '"}')
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    if c then
      for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
    end
  end
  local parts = {}
  for k, v in pairs(total) do parts[#parts + 1] = string.format('"%d":%d', k, v) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"statuses":{%s}}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, table.concat(parts, ",")))
end
