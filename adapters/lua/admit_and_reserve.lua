-- Standalone Redis only (the keys span slots): admission and, only if the request is
-- admitted, the reservation of a verification attempt, in one atomic round trip. A refused
-- request never consumes an attempt.
-- KEYS: global, ip, nonce, bucket, session, lockout, stream.
-- ARGV: now_ms, window_ms, global_limit, ip_limit, user_limit, nonce kept until (ms),
--       threshold, memory_ms, durations, then the ACCOUNT_LOCKED event's pairs.
-- Returns {admit_rl reply, admit_user reply, reserve reply or {NOT_ADMITTED, {}, {}}}.
local rl = do_admit_rl({KEYS[1], KEYS[2]}, {ARGV[1], ARGV[2], ARGV[3], ARGV[4]})
local user = do_admit_user({KEYS[3], KEYS[4]}, {ARGV[1], ARGV[2], ARGV[5], ARGV[6]})
if rl[5] == 0 or user[1] == NONCE_REUSED or user[2][1] == 0 then
  return {rl, user, {NOT_ADMITTED, {}, {}}}
end
local reply = do_reserve({KEYS[5], KEYS[6], KEYS[7]}, {ARGV[1], ARGV[7], ARGV[8], ARGV[9]},
  slice(ARGV, 10))
return {rl, user, reply}
