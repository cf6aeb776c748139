-- Claim an idempotency key for the request about to run, unless something is held under it.
-- KEYS[1] the scoped key. ARGV: the claim (the stored form), the lease in ms.
-- Returns what was held (a claim or a kept answer: the caller decides), or false if the
-- claim was stored.
local held = redis.call('GET', KEYS[1])
if held then
  return held
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
