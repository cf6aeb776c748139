-- Revoke every token of a user (their enrollment or passkeys changed), move their generation
-- on (an attempt reserved before the change issues no token), and append the audit event.
-- KEYS[1] token index, KEYS[2] stream, KEYS[3] generation.
-- ARGV: token key prefix, generation kept (ms), then the event pairs.
-- Returns the number of tokens that were live.
local revoked = 0
for _, digest in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  revoked = revoked + redis.call('DEL', ARGV[1] .. digest)
end
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return revoked
