-- Revoke every token of a user (their enrollment changed), with the audit event.
-- KEYS[1] token index, KEYS[2] stream. ARGV: token key prefix, then the event pairs.
-- Returns the number of tokens that were live.
local revoked = 0
for _, digest in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  revoked = revoked + redis.call('DEL', ARGV[1] .. digest)
end
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
return revoked
