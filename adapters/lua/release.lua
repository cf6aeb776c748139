-- Give back a reservation that met an outage before anything was compared
-- (zeropay_proto.session.release_attempt), atomically.
-- KEYS[1] session, KEYS[2] lockout. ARGV: attempt, now_ms, threshold, memory_ms.
-- Returns {session blob as read ('' if none), {f, l, u, t} as read, 1 if the session got the
-- attempt back else 0, {f, l, u, t} as it stands now (written only if a failure was given back)}.
local blob = redis.call('GET', KEYS[1])
local stored = read_lockout(KEYS[2])
local attempt, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local threshold, memory = tonumber(ARGV[3]), tonumber(ARGV[4])
local f, l, u, t = current_lockout(stored, now, threshold, memory)
if f > 0 then
  if now < u and f - 1 < threshold then l = l - 1; u = 0 end
  f = f - 1
  t = now
  write_lockout(KEYS[2], f, l, u, t, memory)
end
local returned = 0
if blob then
  local state, used, _, expires = session_head(blob)
  if state == PENDING and now < expires and used == attempt then
    redis.call('SET', KEYS[1], with_state(blob, PENDING, used - 1), 'KEEPTTL')
    returned = 1
  end
end
return {blob or '', stored, returned, {f, l, u, t}}
