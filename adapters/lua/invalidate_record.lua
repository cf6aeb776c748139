-- An enrollment (its factors or passkeys) is about to change: drop its record cache entry and
-- hold it (no entry may be cached) for longer than any request that may have read the old row
-- takes, and move the user's generation on, so that no attempt reserved before the change
-- issues a token (conclude.lua) and no earlier token stays valid.
-- KEYS[1] record cache, KEYS[2] hold, KEYS[3] generation. ARGV: hold (ms), generation kept (ms).
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
