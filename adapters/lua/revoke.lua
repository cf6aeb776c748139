-- Revoke one token. KEYS[1] token, KEYS[2] token index, KEYS[3] stream.
-- ARGV: digest (hex), then the event pairs. Returns 1 if the token was live.
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('XADD', KEYS[3], '*', unpack(ARGV, 2))
  return 1
end
return 0
