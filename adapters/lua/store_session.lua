-- A new session, its newly drawn window (if any), the record cache (if it was just read from
-- PostgreSQL, and the record is not held: see invalidate_record.lua) and the audit event,
-- atomically.
-- KEYS[1] session, KEYS[2] window, KEYS[3] audit stream, KEYS[4] record cache, KEYS[5] hold.
-- ARGV: session blob, session expiry (ms), window blob ('' = none), window expiry (ms),
--       record cache value ('' = leave the cache alone), record cache TTL (ms),
--       then the event's field/value pairs.
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3], 'PXAT', ARGV[4])
end
if ARGV[5] ~= '' and redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 7))
return 1
