-- Fire leased tasks (a batch, in one call): for each, create its execution records (only those
-- that do not exist yet: ids are deterministic), queue the pending ones, advance the task to its
-- following occurrence, and end the lease. Fenced by the lease token: a holder whose lease was
-- taken over changes nothing of that task.
-- If the task's schedule or state changed through the API since the lease (srev moved: paused,
-- resumed, rescheduled), the records are still written (the occurrence came due) but the API's
-- schedule stands. A rename does not move srev.
-- The commits come as one MessagePack blob: packing a dozen arguments per task was most of the
-- scheduler's cost of firing.
-- KEYS: 1 next-run index, 2 ready queue, 3 global history, 4 task counts by state, 5 this
--       minute's execution stats, then per commit: task hash, task history, its execution hashes
-- ARGV: 1 MessagePack array of commits, each {task id, lease token, srev at lease, following
--       occurrence (13-digit ms, "" none), state, summary of the first record (set as the task's
--       last if that record is new and not older than the current last; "" none), ready score
--       (ms), {{record id, protobuf, status, global history member}, ...}}
-- Returns per commit {records created, of them PENDING (queued to run)}, or {-1, 0} when the
-- lease was lost.
local commits = cmsgpack.unpack(ARGV[1])
local out = {}
local k = 6
for c = 1, #commits do
  local t = commits[c]
  local id, records = t[1], t[8]
  local key, thist, first = KEYS[k], KEYS[k + 1], k + 2
  k = k + 2 + #records
  local v = redis.call('HMGET', key, 'ltok', 'srev', 'nx', 'state')
  if v[1] ~= t[2] then
    out[c] = {-1, 0}
  else
    local created, queued = 0, 0
    for i = 1, #records do
      local r, ek = records[i], KEYS[first + i - 1]
      if redis.call('EXISTS', ek) == 0 then
        if i == 1 and t[6] ~= '' then
          -- ids sort by nominal time: a newer last is never replaced by an older one
          local last = redis.call('HGET', key, 'lastid')
          if not last or last <= r[1] then
            redis.call('HSET', key, 'last', t[6], 'lastid', r[1])
          end
        end
        redis.call('HSET', ek, 'pb', r[2], 'status', r[3])
        redis.call('ZADD', thist, 0, r[1])
        redis.call('ZADD', KEYS[3], 0, r[4])
        if r[3] == STATUS.PENDING then
          redis.call('ZADD', KEYS[2], t[7], r[1])
          queued = queued + 1
        else  -- born ended (a skipped occurrence): counted in this minute's stats
          redis.call('HINCRBY', KEYS[5], 's' .. r[3], 1)
          redis.call('EXPIRE', KEYS[5], 90000, 'NX')
        end
        created = created + 1
      end
    end
    if (v[2] or '0') == t[3] then
      redis.call('ZREM', KEYS[1], v[3])
      local member = '~:' .. id
      if t[4] == '' then
        redis.call('HDEL', key, 'next')
      else
        redis.call('HSET', key, 'next', t[4])
        member = t[4] .. ':' .. id
      end
      redis.call('ZADD', KEYS[1], 0, member)
      redis.call('HSET', key, 'nx', member, 'state', t[5])
      if v[4] ~= t[5] then
        redis.call('HINCRBY', KEYS[4], v[4], -1)
        redis.call('HINCRBY', KEYS[4], t[5], 1)
      end
    end
    redis.call('HDEL', key, 'lease')
    out[c] = {created, queued}
  end
end
return out
