-- Step 3 of a verification (zeropay_proto.session.conclude_attempt), atomically, on the
-- session as stored now: only a pending session changes (compare-and-set), so a session
-- verifies at most once.
-- KEYS[1] session, KEYS[2] lockout, KEYS[3] token, KEYS[4] user's token index, KEYS[5] stream.
-- ARGV: attempt, unwrapped ('1'/'0'), token value 'session:expires_ms:issued_ms' (the script
--       appends ':' and the number of factors the session challenged: what the token proves),
--       token expiry (ms), token digest (hex),
--       success action, failure action, then event pairs beginning 'action', <placeholder>.
-- Returns {code, blob as read}: -1 no session, -2 attempt never reserved, 0 closed, 1 applied.
local blob = redis.call('GET', KEYS[1])
if not blob then return {-1, ''} end
local attempt = tonumber(ARGV[1])
local state, used, max = string.byte(blob, 2), string.byte(blob, 3), string.byte(blob, 4)
if attempt < 1 or attempt > used then return {-2, blob} end
if state ~= 0 then return {0, blob} end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], with_state(blob, 1, used), 'KEEPTTL')
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[3], ARGV[3] .. ':' .. string.byte(blob, 14), 'PXAT', ARGV[4])
  redis.call('SADD', KEYS[4], ARGV[5])
  local expiry = redis.call('PEXPIRETIME', KEYS[4])
  redis.call('PEXPIREAT', KEYS[4], math.max(expiry, tonumber(ARGV[4])))
  ARGV[9] = ARGV[6]
else
  local new_state = 0
  if attempt >= max then new_state = 2 end
  redis.call('SET', KEYS[1], with_state(blob, new_state, used), 'KEEPTTL')
  ARGV[9] = ARGV[7]
end
redis.call('XADD', KEYS[5], '*', unpack(ARGV, 8))
return {1, blob}
