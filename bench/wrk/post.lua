-- wrk script: POST a JSON body and print machine-readable results.
-- Configured through the environment (set by bench/run.py):
--   BENCH_PATH  request path, e.g. /v1/responses
--   BENCH_BODY  JSON request body
--   BENCH_AUTH  bearer token (optional)
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/responses"
wrk.body = os.getenv("BENCH_BODY") or '{"model":"bench-model","input":"Say hello","stream":false}'
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.2f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
