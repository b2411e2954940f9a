-- Partition migration, step 1 of a task's move (docs/partitions.md, "Changing P"): put the task,
-- its history index and its executions into their new partition and count the task there.
-- KEYS: 1 task hash, 2 task history index, 3 name index, 4 next-run index, 5 global history,
--       6 ready, 7 ready:command, 8 inflight, 9 task counts by state, 10 task quota usage,
--       11 task bytes quota usage, 12 task active set (all of the new partition)
-- ARGV: 1 execution key prefix, 2 task DUMP payload ("" = the task was deleted: executions
--       only), 3 its PTTL (ms, 0 = none), 4 task history DUMP payload ("" = none), 5 its PTTL,
--       then per execution 7 values: id, DUMP payload ("" = none), PTTL, global history member
--       ("" = not in it), ready score, ready:command score, inflight score ("" = not in it)
-- Returns "already" when the task hash is here (an earlier run did this step whole), else "ok".
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then return 'already' end

local function restore(key, payload, ttl)
  if payload ~= '' then redis.call('RESTORE', key, math.max(tonumber(ttl), 0), payload, 'REPLACE') end
end

restore(KEYS[1], ARGV[2], ARGV[3])
if ARGV[2] ~= '' then
  local f = redis.call('HMGET', KEYS[1], 'nm', 'nx', 'state', 'ns', 'sz')
  if f[1] then redis.call('ZADD', KEYS[3], 0, f[1]) end
  if f[2] then redis.call('ZADD', KEYS[4], 0, f[2]) end
  if f[3] then redis.call('HINCRBY', KEYS[9], f[3], 1) end
  if f[4] then  -- a task stored before quotas existed was never counted
    redis.call('HINCRBY', KEYS[10], f[4], 1)
    redis.call('HINCRBY', KEYS[11], f[4], tonumber(f[5] or '0'))
  end
end
restore(KEYS[2], ARGV[4], ARGV[5])
-- the active set is rebuilt from the records: every PENDING or RUNNING one but the buffered run
local buffered = redis.call('HGET', KEYS[1], 'buf')
buffered = buffered and string.match(buffered, '^%d+:%d+:(.+)$')
for i = 6, #ARGV, 7 do
  local id = ARGV[i]
  restore(ARGV[1] .. id, ARGV[i + 1], ARGV[i + 2])
  local s = redis.call('HGET', ARGV[1] .. id, 'status')
  if (s == STATUS.PENDING or s == STATUS.RUNNING) and id ~= buffered then redis.call('SADD', KEYS[12], id) end
  if ARGV[i + 3] ~= '' then redis.call('ZADD', KEYS[5], 0, ARGV[i + 3]) end
  if ARGV[i + 4] ~= '' then redis.call('ZADD', KEYS[6], ARGV[i + 4], id) end
  if ARGV[i + 5] ~= '' then redis.call('ZADD', KEYS[7], ARGV[i + 5], id) end
  if ARGV[i + 6] ~= '' then redis.call('ZADD', KEYS[8], ARGV[i + 6], id) end
end
return 'ok'
