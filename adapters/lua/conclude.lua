-- Step 3 of a verification (zeropay_proto.session.conclude_attempt), atomically, on the
-- session as stored now: only a pending session changes (compare-and-set), so a session
-- verifies at most once; and a proof counts only if the user's generation is still the one
-- read with the reservation (token_valid): against an enrollment changed meanwhile it is a
-- failure like any other.
-- KEYS[1] session, KEYS[2] lockout, KEYS[3] token, KEYS[4] user's token index, KEYS[5] stream,
-- KEYS[6] generation.
-- ARGV: attempt, unwrapped ('1'/'0'), token value 'session:expires_ms:issued_ms' (the script
--       appends ':' and the number of factors the session challenged, what the token proves,
--       then ':' and its generation), token expiry (ms), token digest (hex), success action,
--       failure action, the generation reserved under, then the event's field/value pairs
--       other than its action.
-- Returns {code, blob as read, generation as read}: NO_SESSION, NEVER_RESERVED, CLOSED,
-- SUCCEEDED or REFUTED (what it stored, for the adapter to check against the core).
local blob = redis.call('GET', KEYS[1])
if not blob then return {NO_SESSION, '', 0} end
local generation = tonumber(redis.call('GET', KEYS[6]) or '0')
local attempt = tonumber(ARGV[1])
local state, used, max = session_head(blob)
if attempt < 1 or attempt > used then return {NEVER_RESERVED, blob, generation} end
if state ~= PENDING then return {CLOSED, blob, generation} end
local action, code
if ARGV[2] == '1' and generation == tonumber(ARGV[8]) then
  code = SUCCEEDED
  redis.call('SET', KEYS[1], with_state(blob, VERIFIED, used), 'KEEPTTL')
  redis.call('DEL', KEYS[2])
  local factors = string.byte(blob, AT_FACTOR_COUNT)
  redis.call('SET', KEYS[3], ARGV[3] .. ':' .. factors .. ':' .. generation, 'PXAT', ARGV[4])
  redis.call('SADD', KEYS[4], ARGV[5])
  local expiry = redis.call('PEXPIRETIME', KEYS[4])
  redis.call('PEXPIREAT', KEYS[4], math.max(expiry, tonumber(ARGV[4])))
  -- The generation outlives every token issued under it (GENERATION_KEPT_MS).
  if generation > 0 then
    expiry = redis.call('PEXPIRETIME', KEYS[6])
    redis.call('PEXPIREAT', KEYS[6], math.max(expiry, tonumber(ARGV[4])))
  end
  action = ARGV[6]
else
  code = REFUTED
  local new_state = PENDING
  if attempt >= max then new_state = FAILED end
  redis.call('SET', KEYS[1], with_state(blob, new_state, used), 'KEEPTTL')
  action = ARGV[7]
end
redis.call('XADD', KEYS[5], '*', 'action', action, unpack(ARGV, 9))
return {code, blob, generation}
