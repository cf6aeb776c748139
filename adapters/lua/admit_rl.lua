-- Global fixed window and per-IP sliding window, in one slot ({prefix:rl}), atomically:
-- a request refused by either consumes neither.
-- KEYS[1] global, KEYS[2] ip.  ARGV: now_ms, window_ms, global_limit, ip_limit (0 = off).
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local global_limit, ip_limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local g, ip = {}, {}
local admitted = true
if global_limit > 0 then
  g = fixed_window(KEYS[1], now, global_limit, window)
  admitted = admitted and g[1] == 1
end
if ip_limit > 0 then
  ip = sliding_window(KEYS[2], now, ip_limit, window)
  admitted = admitted and ip[1] == 1
end
if admitted then
  if global_limit > 0 then
    redis.call('HSET', KEYS[1], 's', g[2], 'c', g[3])
    redis.call('PEXPIREAT', KEYS[1], g[2] + window)
  end
  if ip_limit > 0 then
    redis.call('HSET', KEYS[2], 's', ip[2], 'c', ip[3], 'p', ip[4])
    redis.call('PEXPIREAT', KEYS[2], ip[2] + 2 * window)
  end
end
return {g, ip}
