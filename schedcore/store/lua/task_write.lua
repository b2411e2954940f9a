-- Change a task if its revision is still the one the caller read (compare-and-set), keeping
-- both indexes in step. The current index members are read from the hash itself (nm, nx), so an
-- entry the scheduler moved meanwhile is still removed correctly.
-- A new spec that would take the task's namespace past its task bytes quota changes nothing.
-- KEYS: 1 task hash, 2 name index, 3 next-run index, 4 task counts by state, 5 audit stream,
--       6 task bytes quota usage (namespace -> bytes)
-- ARGV: 1 task id, 2 expected rev ("" = any), 3 spec ("" = keep), 4 state ("" = keep),
--       5 next run (padded ms; "" = keep; "-" = none), 6 name index member ("" = keep),
--       7 the namespace's task bytes quota (0 = none), 8 why the state changes ("": a change
--       through the API; any change of state sets or clears the hash's `pr`), 9 audit stream
--       bound ("" = record nothing), 10... the audit event's fields and values
-- Returns {"ok", new rev} | {"missing"} | {"conflict", current rev}
--       | {"quota", "bytes", counted now, bytes the change adds}
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return {'missing'} end
if ARGV[2] ~= '' and rev ~= ARGV[2] then return {'conflict', rev} end
if ARGV[3] ~= '' then
  local ns = redis.call('HGET', KEYS[1], 'ns')
  if ns then  -- a task stored before quotas existed is not counted
    local size = string.len(ARGV[3])
    local grows = size - tonumber(redis.call('HGET', KEYS[1], 'sz') or '0')
    if grows > 0 and not quota_fits(KEYS[6], ns, grows, ARGV[7]) then
      return {'quota', 'bytes', quota_used(KEYS[6], ns), grows}
    end
    redis.call('HINCRBY', KEYS[6], ns, grows)
    redis.call('HSET', KEYS[1], 'sz', size)
  end
  redis.call('HSET', KEYS[1], 'spec', ARGV[3])
end
if ARGV[4] ~= '' then
  local old = redis.call('HGET', KEYS[1], 'state')
  if old ~= ARGV[4] then
    redis.call('HINCRBY', KEYS[4], old, -1)
    redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
    redis.call('HSET', KEYS[1], 'state', ARGV[4])
  end
  if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'pr', ARGV[8]) else redis.call('HDEL', KEYS[1], 'pr') end
end
if ARGV[6] ~= '' then
  redis.call('ZREM', KEYS[2], redis.call('HGET', KEYS[1], 'nm'))
  redis.call('ZADD', KEYS[2], 0, ARGV[6])
  redis.call('HSET', KEYS[1], 'nm', ARGV[6])
end
if ARGV[5] ~= '' then
  redis.call('ZREM', KEYS[3], redis.call('HGET', KEYS[1], 'nx'))
  local member = '~:' .. ARGV[1]
  if ARGV[5] == '-' then
    redis.call('HDEL', KEYS[1], 'next')
  else
    redis.call('HSET', KEYS[1], 'next', ARGV[5])
    member = ARGV[5] .. ':' .. ARGV[1]
  end
  redis.call('ZADD', KEYS[3], 0, member)
  redis.call('HSET', KEYS[1], 'nx', member)
end
-- srev moves only with what the engine's commit would otherwise overwrite (state, next), so a
-- rename while the task is being fired does not hold its schedule back.
if ARGV[4] ~= '' or ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[1], 'srev', 1) end
if ARGV[9] and ARGV[9] ~= '' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[9], '*', unpack(ARGV, 10))
end
return {'ok', redis.call('HINCRBY', KEYS[1], 'rev', 1)}
