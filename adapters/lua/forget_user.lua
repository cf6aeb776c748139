-- Drop a user's record cache, window, lockout and tokens (all in the user's slot), and move
-- their generation on: it is never dropped, so no attempt reserved before the erasure can
-- match it again.
-- KEYS[1] record, KEYS[2] window, KEYS[3] lockout, KEYS[4] token index, KEYS[5] stream,
-- KEYS[6] generation. ARGV: token key prefix, generation kept (ms), then the event pairs.
-- Returns the number of tokens revoked.
local digests = redis.call('SMEMBERS', KEYS[4])
for _, digest in ipairs(digests) do redis.call('DEL', ARGV[1] .. digest) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('INCR', KEYS[6])
redis.call('PEXPIRE', KEYS[6], ARGV[2])
redis.call('XADD', KEYS[5], '*', unpack(ARGV, 3))
return #digests
