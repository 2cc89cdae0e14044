-- GCRA for one bucket, in one atomic step: the algorithm governor runs in process
-- (src/middleware/rate_limit/policy.rs), with the same arithmetic, in microseconds.
--
-- KEYS[1]  the bucket; its value is the theoretical arrival time (TAT), in microseconds
-- ARGV[1]  t, the emission interval: window / quota, in microseconds (at least 1)
-- ARGV[2]  tau, the burst tolerance: t * (quota - 1), in microseconds
-- ARGV[3]  (tests only) now, in microseconds; otherwise Redis's clock, so that processes
--          whose own clocks disagree still agree on every bucket
--
-- Returns {1, tat - now} when the request is allowed (the new TAT, from which the caller
-- derives the remaining burst) and {0, wait} when it is refused (nothing is written).
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
-- A missing bucket is a full one (numbers stay exact: microseconds since 1970 fit in the 53
-- bits of a Lua number for another 200 years).
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local earliest = tat - tau
if now < earliest then
  return {0, earliest - now}
end
tat = math.max(tat, now) + t
-- The key expires when its bucket is full again (a TAT at or before now is a fresh bucket),
-- plus a second, so that a test whose simulated clock runs faster than Redis's never sees a
-- live bucket vanish. '%.0f' writes the number whole ('%g' would round it).
local ttl = math.ceil((tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', ttl))
return {1, tat - now}
