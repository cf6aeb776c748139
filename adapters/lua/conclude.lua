-- Step 3 of a verification (zeropay_proto.session.conclude_attempt), atomically, on the
-- session as stored now: only a pending session changes (compare-and-set), so a session
-- verifies at most once.
-- KEYS[1] session, KEYS[2] lockout, KEYS[3] token, KEYS[4] user's token index, KEYS[5] stream.
-- ARGV: attempt, unwrapped ('1'/'0'), token value 'session:expires_ms:issued_ms' (the script
--       appends ':' and the number of factors the session challenged: what the token proves),
--       token expiry (ms), token digest (hex), success action, failure action, then the
--       event's field/value pairs other than its action.
-- Returns {code, blob as read}: NO_SESSION, NEVER_RESERVED, CLOSED or APPLIED.
local blob = redis.call('GET', KEYS[1])
if not blob then return {NO_SESSION, ''} end
local attempt = tonumber(ARGV[1])
local state, used, max = session_head(blob)
if attempt < 1 or attempt > used then return {NEVER_RESERVED, blob} end
if state ~= PENDING then return {CLOSED, blob} end
local action
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], with_state(blob, VERIFIED, used), 'KEEPTTL')
  redis.call('DEL', KEYS[2])
  local factors = string.byte(blob, AT_FACTOR_COUNT)
  redis.call('SET', KEYS[3], ARGV[3] .. ':' .. factors, 'PXAT', ARGV[4])
  redis.call('SADD', KEYS[4], ARGV[5])
  local expiry = redis.call('PEXPIRETIME', KEYS[4])
  redis.call('PEXPIREAT', KEYS[4], math.max(expiry, tonumber(ARGV[4])))
  action = ARGV[6]
else
  local new_state = PENDING
  if attempt >= max then new_state = FAILED end
  redis.call('SET', KEYS[1], with_state(blob, new_state, used), 'KEEPTTL')
  action = ARGV[7]
end
redis.call('XADD', KEYS[5], '*', 'action', action, unpack(ARGV, 8))
return {APPLIED, blob}
