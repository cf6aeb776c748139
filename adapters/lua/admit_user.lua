-- Nonce claim and/or per-user token bucket: two independent decisions, made in one call when
-- both keys share a slot (always, standalone). KEYS[1] nonce, KEYS[2] bucket.
-- ARGV: now_ms, window_ms, user_limit (0 = off), nonce_ttl_ms (0 = no nonce).
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local limit, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local nonce = -1
if ttl > 0 then
  if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ttl) then nonce = 1 else nonce = 0 end
end
local b = {}
if limit > 0 then
  b = token_bucket(KEYS[2], now, limit, window)
  redis.call('HSET', KEYS[2], 'l', b[2], 'u', b[3])
  -- Forget the bucket once it would be full again anyway.
  redis.call('PEXPIREAT', KEYS[2], b[3] - math.floor((b[2] - limit * window) / limit) + 1)
end
return {nonce, b}
