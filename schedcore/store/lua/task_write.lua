-- Change a task if its revision is still the one the caller read (compare-and-set), keeping
-- both indexes in step. The current index members are read from the hash itself (nm, nx), so an
-- entry the scheduler moved meanwhile is still removed correctly.
-- KEYS: 1 task hash, 2 name index, 3 next-run index, 4 task counts by state, 5 audit stream
-- ARGV: 1 task id, 2 expected rev ("" = any), 3 spec ("" = keep), 4 state ("" = keep),
--       5 next run (padded ms; "" = keep; "-" = none), 6 name index member ("" = keep),
--       7 audit stream bound ("" = record nothing), 8... the audit event's fields and values
-- Returns {"ok", new rev} | {"missing"} | {"conflict", current rev}
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return {'missing'} end
if ARGV[2] ~= '' and rev ~= ARGV[2] then return {'conflict', rev} end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'spec', ARGV[3]) end
if ARGV[4] ~= '' then
  local old = redis.call('HGET', KEYS[1], 'state')
  if old ~= ARGV[4] then
    redis.call('HINCRBY', KEYS[4], old, -1)
    redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
    redis.call('HSET', KEYS[1], 'state', ARGV[4])
  end
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
if ARGV[7] and ARGV[7] ~= '' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*', unpack(ARGV, 8))
end
return {'ok', redis.call('HINCRBY', KEYS[1], 'rev', 1)}
