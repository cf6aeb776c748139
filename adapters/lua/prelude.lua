-- Shared by every ZeroPay script (prepended to each body, after the constants that
-- adapters/redis_scripts.py generates: state codes, session head positions, reply codes).
-- These functions are line-for-line the reference decisions of zeropay_proto.ratelimit,
-- zeropay_proto.admission and zeropay_proto.session; all values are
-- integers below 2^53, so Lua's doubles compute exactly what Python's ints do. The
-- differential tests (tests/adapters/test_lua_differential.py) hold them to that.

local function fixed_window(key, now, limit, window)
  local start = now - (now % window)
  local count = 0
  local s = redis.call('HMGET', key, 's', 'c')
  if s[1] then
    local stored = tonumber(s[1])
    if stored >= start then start = stored; count = tonumber(s[2]) end
  end
  local reset = start + window - now
  if count < limit then
    return {1, start, count + 1, limit - count - 1, 0, reset, s}
  end
  return {0, start, count, 0, reset, reset, s}
end

local function sliding_window(key, now, limit, window)
  local start = now - (now % window)
  local cur, prev = 0, 0
  local s = redis.call('HMGET', key, 's', 'c', 'p')
  if s[1] then
    local stored = tonumber(s[1])
    if stored >= start then
      start = stored; cur = tonumber(s[2]); prev = tonumber(s[3])
    elseif stored == start - window then
      prev = tonumber(s[2])
    end
  end
  local elapsed = math.max(0, now - start)
  local reset = start + window - now
  local weighted = prev * (window - elapsed) + cur * window
  if weighted + window <= limit * window then
    return {1, start, cur + 1, prev, math.floor((limit * window - weighted - window) / window), 0, reset, s}
  end
  local retry
  if cur < limit then
    retry = window - math.floor(((limit - cur - 1) * window) / prev) - elapsed
  else
    retry = reset + window - math.floor(((limit - 1) * window) / cur)
  end
  return {0, start, cur, prev, 0, math.max(1, retry), reset, s}
end

local function token_bucket(key, now, limit, window)
  local full = limit * window
  local level, updated = full, now
  local s = redis.call('HMGET', key, 'l', 'u')
  if s[1] then
    local stored_level, stored_at = tonumber(s[1]), tonumber(s[2])
    level = math.min(full, stored_level + math.max(0, now - stored_at) * limit)
    updated = math.max(stored_at, now)
  end
  if level >= window then
    level = level - window
    return {1, level, updated, math.floor(level / window), 0, -math.floor((level - full) / limit), s}
  end
  return {0, level, updated, 0, -math.floor((level - window) / limit), -math.floor((level - full) / limit), s}
end

-- zeropay_proto.admission's expiries: a bucket is kept until it would be full again.
local function bucket_kept(b, limit, window)
  return b[3] - math.floor((b[2] - limit * window) / limit) + 1
end

-- Session blobs: the head's fields at the AT_* positions; expires_at_ms is 8 bytes big-endian.
local function u64(s, i)
  local n = 0
  for k = i, i + 7 do n = n * 256 + string.byte(s, k) end
  return n
end

local function session_head(blob)
  return string.byte(blob, AT_STATE), string.byte(blob, AT_USED), string.byte(blob, AT_MAX),
    u64(blob, AT_EXPIRES_AT_MS)
end

local function with_state(blob, state, used)
  return string.sub(blob, 1, AT_STATE - 1) .. string.char(state)
    .. string.sub(blob, AT_STATE + 1, AT_USED - 1) .. string.char(used)
    .. string.sub(blob, AT_USED + 1)
end

-- The bodies of the admission and reservation scripts, as functions so that one script can
-- chain them (standalone Redis: admission and reservation in one round trip).

-- zeropay_proto.admission.decide_shared_limits. k: {ip, global, merchant bucket, merchant
-- failures, user bucket}, all in one slot; a: {now, window, ip_limit, global_limit (this
-- shard's share), global_reserve, merchant_limit, failure_cap, failure_window, user_limit}
-- (0: that limiter is off). The address's window decides first; the global one only for a
-- request beyond the address's reserve (beyond_reserve). Every limiter admits and counts, or
-- none counts. The merchant failures are only read here (reserve_failure.lua spends them).
-- Returns {ip, g, m, mf, u, counted (1/0), {expiry of ip, g, m, u as written, 0 if not}};
-- each limiter's reply ends with the fields it read.
local function sliding_kept(w, window) return w[2] + 2 * window end

local function write_sliding(key, w, window)
  redis.call('HSET', key, 's', w[2], 'c', w[3], 'p', w[4])
  redis.call('PEXPIREAT', key, sliding_kept(w, window))
end

local function write_bucket(key, b, limit, window)
  local kept = bucket_kept(b, limit, window)
  redis.call('HSET', key, 'l', b[2], 'u', b[3])
  redis.call('PEXPIREAT', key, kept)
  return kept
end

local function do_admit_shared(k, a)
  local now, window = tonumber(a[1]), tonumber(a[2])
  local ip_limit, global_limit, reserve = tonumber(a[3]), tonumber(a[4]), tonumber(a[5])
  local merchant_limit, failure_cap = tonumber(a[6]), tonumber(a[7])
  local failure_window, user_limit = tonumber(a[8]), tonumber(a[9])
  local ip, g, m, mf, u = {}, {}, {}, {}, {}
  local counted = 1
  if ip_limit > 0 then
    ip = sliding_window(k[1], now, ip_limit, window)
    if ip[1] == 0 then counted = 0 end
  end
  if global_limit > 0 and (ip_limit == 0 or (ip[1] == 1 and ip[3] > reserve)) then
    g = fixed_window(k[2], now, global_limit, window)
    if g[1] == 0 then counted = 0 end
  end
  if merchant_limit > 0 then
    m = token_bucket(k[3], now, merchant_limit, window)
    if m[1] == 0 then counted = 0 end
  end
  if failure_cap > 0 then
    mf = sliding_window(k[4], now, failure_cap, failure_window)
    if mf[1] == 0 then counted = 0 end
  end
  if user_limit > 0 then
    u = token_bucket(k[5], now, user_limit, window)
    if u[1] == 0 then counted = 0 end
  end
  local kept = {0, 0, 0, 0}
  if counted == 1 then
    if ip[1] then
      write_sliding(k[1], ip, window)
      kept[1] = sliding_kept(ip, window)
    end
    if g[1] then
      kept[2] = g[2] + window
      redis.call('HSET', k[2], 's', g[2], 'c', g[3])
      redis.call('PEXPIREAT', k[2], kept[2])
    end
    if m[1] then kept[3] = write_bucket(k[3], m, merchant_limit, window) end
    if u[1] then kept[4] = write_bucket(k[5], u, user_limit, window) end
  end
  return {ip, g, m, mf, u, counted, kept}
end

-- zeropay_proto.replay.decide_nonce: single-use. k: {nonce}; a: {kept until (ms)}.
-- Returns NONCE_REUSED or NONCE_ACCEPTED.
local function do_claim_nonce(k, a)
  if redis.call('SET', k[1], '1', 'NX', 'PXAT', a[1]) then return NONCE_ACCEPTED end
  return NONCE_REUSED
end

-- The stored lockout {f, l, u, t} and Lockout.current(now): forgotten after its memory, and
-- the failure count restarted once a lock has run out.
local function read_lockout(key)
  local lk = redis.call('HMGET', key, 'f', 'l', 'u', 't')
  return {tonumber(lk[1]) or 0, tonumber(lk[2]) or 0, tonumber(lk[3]) or 0, tonumber(lk[4]) or 0}
end

local function current_lockout(s, now, threshold, memory)
  local f, l, u, t = s[1], s[2], s[3], s[4]
  if now >= math.max(u, t) + memory then return 0, 0, 0, 0 end
  if f >= threshold and now >= u then f = 0 end
  return f, l, u, t
end

local function write_lockout(key, f, l, u, t, memory)
  redis.call('HSET', key, 'f', f, 'l', l, 'u', u, 't', t)
  redis.call('PEXPIREAT', key, math.max(u, t) + memory)
end

-- zeropay_proto.audit.with_lock_end: the event's pairs with the lock's end (epoch ms) joined to
-- its details (a JSON object, as AuditEvent.to_fields writes it).
local function with_lock_end(event, u)
  local out = {}
  for i = 1, #event, 2 do
    local name, value = event[i], event[i + 1]
    if name == 'details' then
      local rest = string.sub(value, 2)
      if rest ~= '}' then rest = ',' .. rest end
      value = '{"locked_until_ms":' .. string.format('%d', u) .. rest
    end
    out[#out + 1] = name
    out[#out + 1] = value
  end
  return out
end

-- zeropay_proto.session.reserve_attempt. k: {session, lockout, stream};
-- a: {now, threshold, memory_ms, durations (ms, comma-separated)}; event: the ACCOUNT_LOCKED
-- event's field/value pairs, appended (with the lock's end) only if this reservation locks
-- the account.
-- Returns {code, {blob, f, l, u, t} as read, {f, l, u, t} as written, 1 if it locked the
-- account}: code NO_SESSION, CLOSED, LOCKED or RESERVED (nothing written unless RESERVED).
local function do_reserve(k, a, event)
  local blob = redis.call('GET', k[1])
  if not blob then return {NO_SESSION, {}} end
  local stored = read_lockout(k[2])
  local before = {blob, stored[1], stored[2], stored[3], stored[4]}
  local now, threshold, memory = tonumber(a[1]), tonumber(a[2]), tonumber(a[3])
  local durations = {}
  for d in string.gmatch(a[4], '[^,]+') do durations[#durations + 1] = tonumber(d) end

  local state, used, max, expires = session_head(blob)
  if state == PENDING and now >= expires then state = EXPIRED end
  if state ~= PENDING or used >= max then return {CLOSED, before} end

  local f, l, u, t = current_lockout(stored, now, threshold, memory)
  if now < u then return {LOCKED, before} end
  f = f + 1
  if f >= threshold then
    u = now + durations[math.min(l, #durations - 1) + 1]
    l = l + 1
  end
  t = now
  write_lockout(k[2], f, l, u, t, memory)
  redis.call('SET', k[1], with_state(blob, PENDING, used + 1), 'KEEPTTL')
  -- AttemptReserved.locked_account: the lock this reservation engaged.
  local locked = 0
  if u > t then
    locked = 1
    redis.call('XADD', k[3], '*', unpack(with_lock_end(event, u)))
  end
  return {RESERVED, before, {f, l, u, t}, locked}
end

local function slice(t, from)
  local out = {}
  for i = from, #t do out[#out + 1] = t[i] end
  return out
end
