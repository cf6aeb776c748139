-- Shared by every ZeroPay script (prepended to each body). These functions are line-for-line
-- the reference decisions of zeropay_proto.ratelimit and zeropay_proto.session; all values are
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
    return {1, start, count + 1, limit - count - 1, 0, reset}
  end
  return {0, start, count, 0, reset, reset}
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
    return {1, start, cur + 1, prev, math.floor((limit * window - weighted - window) / window), 0, reset}
  end
  local retry
  if cur < limit then
    retry = window - math.floor(((limit - cur - 1) * window) / prev) - elapsed
  else
    retry = reset + window - math.floor(((limit - 1) * window) / cur)
  end
  return {0, start, cur, prev, 0, math.max(1, retry), reset}
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
    return {1, level, updated, math.floor(level / window), 0, -math.floor((level - full) / limit)}
  end
  return {0, level, updated, 0, -math.floor((level - window) / limit), -math.floor((level - full) / limit)}
end

-- Session blobs: byte 2 state, 3 attempts used, 4 max attempts, 6-13 expires_at_ms (1-based).
local function u64(s, i)
  local n = 0
  for k = i, i + 7 do n = n * 256 + string.byte(s, k) end
  return n
end

local function with_state(blob, state, used)
  return string.sub(blob, 1, 1) .. string.char(state) .. string.char(used) .. string.sub(blob, 4)
end
