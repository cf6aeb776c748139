-- Standalone Redis only (the keys span slots): admission and, only if the request is
-- admitted, the reservation of a verification attempt, in one atomic round trip. A refused
-- request never consumes an attempt.
-- KEYS: the five limiter keys (admit_shared.lua), nonce, session, lockout, stream.
-- ARGV: admit_shared's nine, nonce kept until (ms; 0 = no nonce), threshold, memory_ms,
--       durations, then the ACCOUNT_LOCKED event's pairs.
-- Returns {admit_shared reply, nonce code (NO_NONCE without one), reserve reply or
-- {NOT_ADMITTED, {}}}.
local shared = do_admit_shared(KEYS, ARGV)
local nonce = NO_NONCE
if tonumber(ARGV[10]) > 0 then nonce = do_claim_nonce({KEYS[6]}, {ARGV[10]}) end
if shared[6] == 0 or nonce == NONCE_REUSED then
  return {shared, nonce, {NOT_ADMITTED, {}}}
end
local reply = do_reserve({KEYS[7], KEYS[8], KEYS[9]}, {ARGV[1], ARGV[11], ARGV[12], ARGV[13]},
  slice(ARGV, 14))
return {shared, nonce, reply}
