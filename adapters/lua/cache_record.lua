-- Cache a user's record (what initiate just read from PostgreSQL), unless it is held: an
-- enrollment change began a moment ago, and the row read may predate it.
-- KEYS[1] record cache, KEYS[2] hold. ARGV[1] value, ARGV[2] TTL (ms).
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
