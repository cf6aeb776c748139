-- Step 1 of a verification (zeropay_proto.session.reserve_attempt), atomically: count the
-- attempt against the session and the user's lockout before any comparison.
-- KEYS[1] session, KEYS[2] lockout, KEYS[3] audit stream.
-- ARGV: now_ms, threshold, memory_ms, lock durations (ms, comma-separated), then the
--       ACCOUNT_LOCKED event's field/value pairs (appended only if this reservation locks).
-- Returns {code, {blob, f, l, u, t}} with the snapshot as read: code -1 no session,
-- 0 session closed, 1 account locked, 2 reserved.
local blob = redis.call('GET', KEYS[1])
if not blob then return {-1, {}} end
local lk = redis.call('HMGET', KEYS[2], 'f', 'l', 'u', 't')
local f0, l0 = tonumber(lk[1]) or 0, tonumber(lk[2]) or 0
local u0, t0 = tonumber(lk[3]) or 0, tonumber(lk[4]) or 0
local before = {blob, f0, l0, u0, t0}
local now, threshold, memory = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local durations = {}
for d in string.gmatch(ARGV[4], '[^,]+') do durations[#durations + 1] = tonumber(d) end

local state, used, max = string.byte(blob, 2), string.byte(blob, 3), string.byte(blob, 4)
if state == 0 and now >= u64(blob, 6) then state = 3 end
if state ~= 0 or used >= max then return {0, before} end

local f, l, u, t = f0, l0, u0, t0
if now >= math.max(u, t) + memory then
  f, l, u, t = 0, 0, 0, 0
elseif f >= threshold and now >= u then
  f = 0
end
if now < u then return {1, before} end
f = f + 1
if f >= threshold then
  u = now + durations[math.min(l, #durations - 1) + 1]
  l = l + 1
end
t = now
redis.call('HSET', KEYS[2], 'f', f, 'l', l, 'u', u, 't', t)
redis.call('PEXPIREAT', KEYS[2], math.max(u, t) + memory)
redis.call('SET', KEYS[1], with_state(blob, 0, used + 1), 'KEEPTTL')
if u > u0 then redis.call('XADD', KEYS[3], '*', unpack(ARGV, 5)) end
return {2, before}
