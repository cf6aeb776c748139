-- Step 1 of a verification (zeropay_proto.session.reserve_attempt), atomically: count the
-- attempt against the session and the user's lockout before any comparison.
-- KEYS[1] session, KEYS[2] lockout, KEYS[3] audit stream.
-- ARGV: now_ms, threshold, memory_ms, lock durations (ms, comma-separated), then the
--       ACCOUNT_LOCKED event's field/value pairs.
return do_reserve(KEYS, ARGV, slice(ARGV, 5))
