-- Every limiter of a request, in its one slot (an address's shard, or a merchant's),
-- atomically: a request refused by any consumes none.
-- KEYS: ip, global, merchant bucket, merchant failures, user bucket.
-- ARGV: now_ms, window_ms, ip_limit, global_limit, global_reserve, merchant_limit,
--       failure_cap, failure_window_ms, user_limit (0 = off).
return do_admit_shared(KEYS, ARGV)
