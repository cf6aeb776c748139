-- zeropay_proto.admission.reserve_merchant_failure: before a verify of a merchant's session
-- compares anything, one failure reserved in the merchant's sliding window, or refused once
-- the budget is spent (nothing written). KEYS[1] merchant failures.
-- ARGV: now_ms, failure_cap, failure_window_ms.
-- Returns the sliding window's reply (which ends with the fields it read).
local window = tonumber(ARGV[3])
local w = sliding_window(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), window)
if w[1] == 1 then write_sliding(KEYS[1], w, window) end
return w
