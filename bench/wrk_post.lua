-- wrk script: POST a fixed body and print a parseable summary.
--
-- Environment:
--   BENCH_BODY_FILE      file holding the request body (required)
--   BENCH_AUTHORIZATION  value of the Authorization header (optional)
--
-- done() prints one line: "BENCH_WRK_JSON {...}" with latencies in microseconds.
-- No response() callback on purpose: defining one makes wrk hand every response
-- to Lua and slows the generator down. Non-2xx/3xx answers count in err_status.

local body_file = assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE is not set")
local f = assert(io.open(body_file, "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTHORIZATION")
if auth ~= nil and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_WRK_JSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,"
      .. "\"err_connect\":%d,\"err_read\":%d,\"err_write\":%d,\"err_status\":%d,"
      .. "\"err_timeout\":%d,\"mean_us\":%.1f,\"max_us\":%.1f,"
      .. "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
