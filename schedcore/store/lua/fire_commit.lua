-- Fire one leased task: create its execution records (only those that do not exist yet: ids are
-- deterministic), queue the pending ones, advance the task to its following occurrence, and end
-- the lease. Fenced by the lease token: a holder whose lease was taken over changes nothing.
-- If the task's schedule or state changed through the API since the lease (srev moved: paused,
-- resumed, rescheduled), the records are still written (the occurrence came due) but the API's
-- schedule stands. A rename does not move srev.
-- KEYS: 1 task hash, 2 next-run index, 3 ready queue, 4 global history, 5 task history,
--       6 task counts by state, 7 this minute's execution stats, 8.. execution hashes
-- ARGV: 1 task id, 2 lease token, 3 srev at lease, 4 following occurrence (13-digit ms, "" none),
--       5 state, 6 summary of the first record, set as the task's last if that record is new
--       and not older than the current last, 7 ready score (ms),
--       then per record: id, protobuf, status, global history member
-- Returns {records created, of them PENDING (queued to run)}, or {-1, 0} when the lease was lost.
local key = KEYS[1]
local v = redis.call('HMGET', key, 'ltok', 'srev', 'nx', 'state')
if v[1] ~= ARGV[2] then return {-1, 0} end
local created = 0
local queued = 0
local pending = '1'
for i = 0, (#ARGV - 7) / 4 - 1 do
  local ek, a = KEYS[8 + i], 8 + 4 * i
  if redis.call('EXISTS', ek) == 0 then
    if i == 0 and ARGV[6] ~= '' then
      -- ids sort by nominal time: a newer last is never replaced by an older one
      local last = redis.call('HGET', key, 'lastid')
      if not last or last <= ARGV[a] then
        redis.call('HSET', key, 'last', ARGV[6], 'lastid', ARGV[a])
      end
    end
    redis.call('HSET', ek, 'pb', ARGV[a + 1], 'status', ARGV[a + 2])
    redis.call('ZADD', KEYS[5], 0, ARGV[a])
    redis.call('ZADD', KEYS[4], 0, ARGV[a + 3])
    if ARGV[a + 2] == pending then
      redis.call('ZADD', KEYS[3], ARGV[7], ARGV[a])
      queued = queued + 1
    else  -- born ended (a skipped occurrence): counted in this minute's stats
      redis.call('HINCRBY', KEYS[7], 's' .. ARGV[a + 2], 1)
      redis.call('EXPIRE', KEYS[7], 90000, 'NX')
    end
    created = created + 1
  end
end
if (v[2] or '0') == ARGV[3] then
  redis.call('ZREM', KEYS[2], v[3])
  local member = '~:' .. ARGV[1]
  if ARGV[4] == '' then
    redis.call('HDEL', key, 'next')
  else
    redis.call('HSET', key, 'next', ARGV[4])
    member = ARGV[4] .. ':' .. ARGV[1]
  end
  redis.call('ZADD', KEYS[2], 0, member)
  redis.call('HSET', key, 'nx', member, 'state', ARGV[5])
  if v[4] ~= ARGV[5] then
    redis.call('HINCRBY', KEYS[6], v[4], -1)
    redis.call('HINCRBY', KEYS[6], ARGV[5], 1)
  end
end
redis.call('HDEL', key, 'lease')
return {created, queued}
