-- An enrollment is about to change: drop its record cache entry and hold it (no entry may
-- be cached) for longer than any request that may have read the old row takes.
-- KEYS[1] record cache, KEYS[2] hold. ARGV[1] hold (ms).
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return 1
