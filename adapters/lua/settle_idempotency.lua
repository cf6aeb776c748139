-- Settle a claim: keep the request's answer under the key, or release the key, only if the
-- claim is still the one this request stored (a lapsed claim may be another request's now).
-- KEYS[1] the scoped key. ARGV: the claim, the answer ('' to release), its lifetime in ms.
-- Returns 1 if settled, 0 if the claim was no longer there.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
