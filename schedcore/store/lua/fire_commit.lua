-- Fire leased tasks (a batch, in one call): for each, create its execution records (only those
-- that do not exist yet: ids are deterministic), queue the pending ones, advance the task to its
-- following occurrence, and end the lease. Fenced by the lease token: a holder whose lease was
-- taken over changes nothing of that task.
-- If the task's schedule or state changed through the API since the lease (srev moved: paused,
-- resumed, rescheduled), the records are still written (the occurrence came due) but the API's
-- schedule stands. A rename does not move srev.
-- The commits come as one MessagePack blob: packing a dozen arguments per task was most of the
-- scheduler's cost of firing. Each task's hash is written by one HSET and one HDEL; the counts
-- of tasks by state and this minute's skipped records are added once per call.
-- KEYS: 1 next-run index, 2 ready queue, 3 global history, 4 task counts by state, 5 this
--       minute's execution stats, then per commit: task hash, task history, its execution hashes
-- ARGV: 1 MessagePack array of commits, each {task id, lease token, srev at lease, following
--       occurrence (13-digit ms, "" none), state, summary of the first record (set as the task's
--       last if that record is new and not older than the current last; "" none), ready score
--       (ms), {{record id, protobuf, status, global history member}, ...}}
-- Returns per commit {records created, of them PENDING (queued to run)}, or {-1, 0} when the
-- lease was lost.
local commits = cmsgpack.unpack(ARGV[1])
local out, by_state, ended = {}, {}, {}
local k = 6
for c = 1, #commits do
  local t = commits[c]
  local id, token, srev, following, state, first_summary, ready_at, records =
    t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8]
  local key, thist, first = KEYS[k], KEYS[k + 1], k + 2
  k = k + 2 + #records
  local v = redis.call('HMGET', key, 'ltok', 'srev', 'nx', 'state', 'lastid')
  if v[1] ~= token then
    out[c] = {-1, 0}
  else
    local created, queued = 0, 0
    local set, del = {}, {'lease'}
    for i = 1, #records do
      local rid, record, status, member = records[i][1], records[i][2], records[i][3], records[i][4]
      local ek = KEYS[first + i - 1]
      if redis.call('EXISTS', ek) == 0 then
        if i == 1 and first_summary ~= '' and newer_last(v[5], rid) then
          set[#set + 1], set[#set + 2], set[#set + 3], set[#set + 4] = 'last', first_summary, 'lastid', rid
        end
        redis.call('HSET', ek, 'pb', record, 'status', status)
        redis.call('ZADD', thist, 0, rid)
        redis.call('ZADD', KEYS[3], 0, member)
        if status == STATUS.PENDING then
          redis.call('ZADD', KEYS[2], ready_at, rid)
          queued = queued + 1
        else  -- born ended (a skipped occurrence): counted in this minute's stats
          ended['s' .. status] = (ended['s' .. status] or 0) + 1
        end
        created = created + 1
      end
    end
    if (v[2] or '0') == srev then
      redis.call('ZREM', KEYS[1], v[3])
      local member = '~:' .. id
      if following == '' then
        del[#del + 1] = 'next'
      else
        member = following .. ':' .. id
        set[#set + 1], set[#set + 2] = 'next', following
      end
      redis.call('ZADD', KEYS[1], 0, member)
      set[#set + 1], set[#set + 2], set[#set + 3], set[#set + 4] = 'nx', member, 'state', state
      if v[4] ~= state then
        if v[4] then by_state[v[4]] = (by_state[v[4]] or 0) - 1 end
        by_state[state] = (by_state[state] or 0) + 1
      end
    end
    if #set > 0 then redis.call('HSET', key, unpack(set)) end
    redis.call('HDEL', key, unpack(del))
    out[c] = {created, queued}
  end
end
add_counts(KEYS[4], by_state)
if add_counts(KEYS[5], ended) then redis.call('EXPIRE', KEYS[5], 90000, 'NX') end
return out
