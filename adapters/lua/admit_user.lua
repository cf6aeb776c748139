-- Nonce claim and/or per-user token bucket: two independent decisions, made in one call when
-- both keys share a slot (always, standalone). KEYS[1] nonce, KEYS[2] bucket.
-- ARGV: now_ms, window_ms, user_limit (0 = off), nonce kept until (ms; 0 = no nonce).
return do_admit_user(KEYS, ARGV)
