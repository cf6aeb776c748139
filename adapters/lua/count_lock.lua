-- A merchant's session locked an account: count it in the merchant's lock window (read by
-- admit_rl.lua against the merchant's cap). KEYS[1] merchant locks. ARGV: now_ms, window_ms.
-- Returns the count in the current window.
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local w = fixed_window(KEYS[1], now, 2147483647, window)
redis.call('HSET', KEYS[1], 's', w[2], 'c', w[3])
redis.call('PEXPIREAT', KEYS[1], w[2] + window)
return w[3]
