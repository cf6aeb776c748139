-- zeropay_proto.admission.refund_merchant_failure: a reserved failure that did not happen is
-- taken back from the window it was counted in (this one's count, or the previous one's once
-- the window moved on). KEYS[1] merchant failures. ARGV: the reserved window's start (ms),
-- failure_window_ms. Returns {expiry as written (0: nothing written), the fields read}.
local reserved, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local s = redis.call('HMGET', KEYS[1], 's', 'c', 'p')
if not s[1] then return {0, s} end
local start, cur, prev = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
if start == reserved and cur > 0 then
  cur = cur - 1
elseif start == reserved + window and prev > 0 then
  prev = prev - 1
else
  return {0, s}
end
write_sliding(KEYS[1], {1, start, cur, prev}, window)
return {start + 2 * window, s}
