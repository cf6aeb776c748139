-- Take a passkey registration challenge only if it is still the one the response was checked
-- against: a registration that did not verify leaves it, and a newer one (new options asked
-- meanwhile) is not taken by a response to the old. KEYS[1] challenge. ARGV: the challenge.
-- Returns 1 if taken.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
