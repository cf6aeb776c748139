-- zeropay_proto.admission.count_merchant_lock: a merchant's session locked an account, counted
-- in the merchant's lock window (read by admit_rl.lua against the merchant's cap).
-- KEYS[1] merchant locks. ARGV: now_ms, window_ms.
-- Returns {window start, count, expiry as written, the fields as read}.
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local w = fixed_window(KEYS[1], now, UNCAPPED, window)
local kept = w[2] + window
redis.call('HSET', KEYS[1], 's', w[2], 'c', w[3])
redis.call('PEXPIREAT', KEYS[1], kept)
return {w[2], w[3], kept, w[7]}
