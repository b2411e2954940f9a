-- Delete a task and its index entries if its revision is still the expected one.
-- Its executions still waiting end CANCELLED when a scheduler leases them and finds no task; the
-- one waiting in its overlap buffer (in no queue) is queued for that, and its active set goes.
-- KEYS: 1 task hash, 2 name index, 3 next-run index, 4 task counts by state, 5 audit stream,
--       6 task quota usage (namespace -> tasks), 7 task bytes quota usage (namespace -> bytes),
--       8 task active set, 9 ready queue
-- ARGV: 1 task id, 2 expected rev ("" = any), 3 audit stream bound ("" = record nothing),
--       4... the audit event's fields and values
-- Returns {"ok"} | {"missing"} | {"conflict", current rev}
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return {'missing'} end
if ARGV[2] ~= '' and rev ~= ARGV[2] then return {'conflict', rev} end
redis.call('ZREM', KEYS[2], redis.call('HGET', KEYS[1], 'nm'))
redis.call('ZREM', KEYS[3], redis.call('HGET', KEYS[1], 'nx'))
redis.call('HINCRBY', KEYS[4], redis.call('HGET', KEYS[1], 'state'), -1)
local ns = redis.call('HGET', KEYS[1], 'ns')
if ns then  -- a task stored before quotas existed was never counted
  if redis.call('HINCRBY', KEYS[6], ns, -1) <= 0 then redis.call('HDEL', KEYS[6], ns) end
  local size = tonumber(redis.call('HGET', KEYS[1], 'sz') or '0')
  if redis.call('HINCRBY', KEYS[7], ns, -size) <= 0 then redis.call('HDEL', KEYS[7], ns) end
end
local buffered = redis.call('HGET', KEYS[1], 'buf')
if buffered then redis.call('ZADD', KEYS[9], 0, string.match(buffered, '^%d+:%d+:(.+)$')) end
redis.call('DEL', KEYS[1], KEYS[8])
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
end
return {'ok'}
