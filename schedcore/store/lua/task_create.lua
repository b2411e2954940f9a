-- Create a task with its index entries, and remember the client's request id, atomically.
-- KEYS: 1 task hash, 2 name index, 3 next-run index, 4 request-id key, 5 task counts by state,
--       6 audit stream (schedcore/store/audit.py), 7 task quota usage (namespace -> tasks),
--       8 task bytes quota usage (namespace -> bytes)
-- ARGV: 1 task id, 2 spec (protobuf), 3 state, 4 next run (padded ms, or "" for none),
--       5 name index member, 6 request fingerprint ("" when no request id), 7 request-id ttl (s),
--       8 namespace, 9 its task quota, 10 its task bytes quota (quotas: 0 = none; a task counts
--       the bytes of its spec), 11 audit stream bound ("" = record nothing), 12... the audit
--       event's fields and values
-- A repeated request id (the task exists already) changes nothing and records nothing.
-- Returns {"ok"} | {"dup", "<task id>:<fingerprint>"} | {"collision"}
--       | {"quota", "tasks" or "bytes", counted now}
if ARGV[6] ~= '' then
  local prior = redis.call('GET', KEYS[4])
  if prior then return {'dup', prior} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'collision'} end
local ns, size = ARGV[8], string.len(ARGV[2])
if not quota_fits(KEYS[7], ns, 1, ARGV[9]) then return {'quota', 'tasks', quota_used(KEYS[7], ns)} end
if not quota_fits(KEYS[8], ns, size, ARGV[10]) then return {'quota', 'bytes', quota_used(KEYS[8], ns)} end
redis.call('HINCRBY', KEYS[7], ns, 1)
redis.call('HINCRBY', KEYS[8], ns, size)
local member = '~:' .. ARGV[1]
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'next', ARGV[4])
  member = ARGV[4] .. ':' .. ARGV[1]
end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'rev', 1, 'srev', 1, 'state', ARGV[3], 'nm', ARGV[5], 'nx', member, 'ns', ns, 'sz', size)
redis.call('HINCRBY', KEYS[5], ARGV[3], 1)
redis.call('ZADD', KEYS[2], 0, ARGV[5])
redis.call('ZADD', KEYS[3], 0, member)
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[4], ARGV[1] .. ':' .. ARGV[6], 'EX', ARGV[7])
end
if ARGV[11] ~= '' then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[11], '*', unpack(ARGV, 12))
end
return {'ok'}
