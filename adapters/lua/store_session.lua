-- A new session, its newly drawn window (if any) and the audit event, atomically.
-- KEYS[1] session, KEYS[2] window, KEYS[3] audit stream.
-- ARGV: session blob, session expiry (ms), window blob ('' = none), window expiry (ms),
--       then the event's field/value pairs.
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3], 'PXAT', ARGV[4])
end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 5))
return 1
