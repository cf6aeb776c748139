-- Global fixed window, per-IP sliding window, and (merchant routes) the merchant's token
-- bucket and lock cap, in one slot ({prefix:rl}), atomically: a request refused by any
-- consumes none. KEYS: global, ip, merchant bucket, merchant locks.
-- ARGV: now_ms, window_ms, global_limit, ip_limit, merchant_limit, merchant_lock_cap,
--       lock_window_ms (0 = off).
return do_admit_rl(KEYS, ARGV)
