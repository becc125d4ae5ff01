-- wrk script: POST /v1/works with a distinct SHA-256 per request; prints one JSON line at the end.
-- Arguments: the API key, then a run number (0-65535) that keeps each run's content apart: a
-- measured run that sent the warm-up's hashes again would be answered "already registered"
-- (D36) and measure that instead of new registrations.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  run = tonumber(args[2] or "0")
end

function request()
  counter = counter + 1
  local sha = string.format("%04x%08x%016x", run, tid, counter) .. string.rep("a", 36)
  local body = '{"sha256":"' .. sha .. '","title":"benchmark work","creators":["Bench"],'
    .. '"work_type":"text"}'
  return wrk.format(nil, "/v1/works", nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_s":%.3f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(90) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    e.connect, e.read, e.write, e.status, e.timeout))
end
