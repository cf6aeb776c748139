-- zeropay_proto.admission.decide_auth_failure: a wrong merchant key from an address, counted
-- in its sliding window of failures unless the window is full (then nothing is written).
-- KEYS[1] the address's failures. ARGV: now_ms, limit, window_ms.
-- Returns the sliding window's reply (which ends with the fields it read).
local window = tonumber(ARGV[3])
local w = sliding_window(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), window)
if w[1] == 1 then write_sliding(KEYS[1], w, window) end
return w
