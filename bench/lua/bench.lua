-- wrk script for the benchmarks: request paths and a machine-readable summary.
--
-- Arguments (after `--` on wrk's command line):
--   fixed <path> [delay_ms]          every request GETs <path>
--   ids <prefix> <ids-file> [delay_ms]  GET <prefix><id>, id drawn at random per request
-- delay_ms > 0 paces each connection (a background load, not a saturating one).
-- done() prints one line "BENCH_JSON {...}" with wrk's own latency percentiles.

local counter = 0
local threads = {}

function setup(thread)
   counter = counter + 1
   thread:set("thread_number", counter)
   table.insert(threads, thread)
end

local mode, path, prefix, ids, pause

function init(args)
   mode = args[1] or "fixed"
   math.randomseed(os.time() * 1000 + (thread_number or 0) * 7919)
   if mode == "ids" then
      prefix = args[2]
      ids = {}
      for line in io.lines(args[3]) do
         if #line > 0 then ids[#ids + 1] = line end
      end
      pause = tonumber(args[4] or "0")
   else
      path = args[2] or "/"
      pause = tonumber(args[3] or "0")
   end
   if pause > 0 then
      -- wrk looks for a global delay() after init(): defining it here paces this thread.
      delay = function() return pause end
   end
   if mode == "fixed" then
      local req = wrk.format("GET", path)
      request = function() return req end
   end
end

function request()
   return wrk.format("GET", prefix .. ids[math.random(#ids)])
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"min": %.1f, "mean": %.1f, "max": %.1f, "p50": %.1f, "p90": %.1f, ' ..
      '"p99": %.1f, "p999": %.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.max,
      latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
