-- Global fixed window and per-IP sliding window, in one slot ({prefix:rl}), atomically:
-- a request refused by either consumes neither.
-- KEYS[1] global, KEYS[2] ip.  ARGV: now_ms, window_ms, global_limit, ip_limit (0 = off).
return do_admit_rl(KEYS, ARGV)
