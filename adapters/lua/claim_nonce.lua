-- Claim a nonce (single-use). KEYS[1] nonce. ARGV[1] kept until (ms).
return do_claim_nonce(KEYS, ARGV)
