-- Fire due tasks (a batch, in one call), each by compare-and-set (docs/engine.md, "Firing"): a
-- task whose `next` is still the nominal time the caller read and whose `srev` has not moved gets
-- its execution records (only those that do not exist yet: ids are deterministic), the pending one
-- queued, and its following occurrence; any other task is left as it is and reported as a
-- conflict (another replica fired it first, or the API paused, rescheduled or deleted it).
-- The commits come as one MessagePack blob: packing a dozen arguments per task was most of the
-- scheduler's cost of firing. Each task's hash is written by one HSET (and one HDEL when it has
-- no following occurrence); the counts of tasks by state and this minute's skipped records are
-- added once per call.
-- A commit flagged `lease` creates its run (its first record, when PENDING; a task caught up
-- with several runs queues the others) leased to the caller, as dispatch_lease.lua would:
-- status RUNNING, token 1, in inflight until now + lease ms, not in ready (docs/engine.md,
-- "Leased as it fires").
-- A commit with an overlap rule ({policy, limit}: "skip", "buffer" or "cancel") decides each of
-- its runs against the task's active executions here, in the same script that creates it
-- (docs/engine.md, "Overlap"): fewer than `limit` active, it runs; otherwise it is recorded
-- SKIPPED, or waits in the task's buffer (one at most), or (cancel) the oldest active ones are
-- cancelled and it runs, or waits for them to end. Every run created joins the active set.
-- A commit with an alert rule (docs/alerts.md) raises SKIPPED once for the records it created
-- SKIPPED (when the rule asks) unless a skipping incident is open (task hash `as`, closed by a
-- commit that runs an occurrence and skips none), and puts each run it created in the alert
-- watch set when the rule has a late-start or a running-long limit (alert_sweep.lua).
-- KEYS: 1 next-run index, 2 ready queue, 3 global history, 4 task counts by state, 5 this
--       minute's execution stats, 6 inflight, 7 command ready queue
-- ARGV: 1 MessagePack array of commits, each {task id, nominal time read (13-digit ms), srev
--       read, following occurrence (13-digit ms, "" none), state, summary of the first record
--       (set as the task's last if that record is new and not older than the current last; ""
--       none), ready score (ms), {{record id, protobuf, status, global history member}, ...},
--       deferred until (13-digit ms; "" not deferred: a task that could not be planned keeps its
--       `next` and records nothing, and its index entry comes due again then), lease ("1":
--       lease the run to the caller; "" queue it in ready), overlap rule ("" none), alert rule
--       ("" none: prelude's alert_rule)}; 2 lease ms, 3-6 the key prefixes of task hashes, task
--       histories, execution hashes and active sets (each plus an id), 7-9 notification prefix,
--       due set, task notification list prefix, 10 the alert watch set
-- Returns per commit {records created, of them PENDING (queued to run), of those leased}, or
-- {-1, 0, 0} on conflict.
local commits = cmsgpack.unpack(ARGV[1])
local out, by_state, ended = {}, {}, {}
local task_prefix, history_prefix, execution_prefix, active_prefix = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local alerts_at, watch = {ARGV[7], ARGV[8], ARGV[9]}, ARGV[10]
local now  -- Redis time, read once, when first needed (a lease's expiry, an overlap decision)
local function clock()
  now = now or now_ms()
  return now
end
local g = gathered()  -- the index, ready and global history: one write each per call

-- An execution an overlap decision ended (CANCELLED): counted in this minute's stats.
local function ended_cancelled()
  ended['s' .. STATUS.CANCELLED] = (ended['s' .. STATUS.CANCELLED] or 0) + 1
end
for c = 1, #commits do
  local t = commits[c]
  local id, nominal, srev, following, state, first_summary, ready_at, records, deferred, lease, ov, rule =
    t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], alert_rule(t[12])
  local key, thist, act = task_prefix .. id, history_prefix .. id, active_prefix .. id
  local v = redis.call('HMGET', key, 'next', 'srev', 'nx', 'state', 'lastid')
  if v[1] ~= nominal or (v[2] or '0') ~= srev then
    out[c] = {-1, 0, 0}
  elseif deferred ~= '' then
    local member = deferred .. ':' .. id
    redis.call('ZREM', KEYS[1], v[3])
    redis.call('ZADD', KEYS[1], 0, member)
    redis.call('HSET', key, 'nx', member)
    out[c] = {0, 0, 0}
  else
    local created, queued, leased = 0, 0, 0
    local set, del = {}, {}
    local skipped, skip_message = {}, nil
    for i = 1, #records do
      local rid, record, status, member = records[i][1], records[i][2], records[i][3], records[i][4]
      local ek = execution_prefix .. rid
      if redis.call('EXISTS', ek) == 0 then
        local fate, message = 'run', nil
        if status == STATUS.PENDING and ov ~= '' then
          fate, message = overlap_fate(ov, key, act, rid, execution_prefix, KEYS[2], KEYS[7], clock(), ended_cancelled)
        end
        local summary = first_summary
        if fate == 'skip' then
          status = STATUS.SKIPPED
          skip_message = skip_message or message
          record = pb_ended(record, status, message, clock()) .. pb_int(FIELD.attempt, 0)
          if summary ~= '' then summary = summary .. pb_int(2, tonumber(status)) .. pb_time(4, clock()) end
        elseif fate == 'buffer' then
          record = record .. pb_bytes(FIELD.status_message, message)
        end
        if i == 1 and summary ~= '' and newer_last(v[5], rid) then
          set[#set + 1], set[#set + 2], set[#set + 3], set[#set + 4] = 'last', summary, 'lastid', rid
        end
        redis.call('ZADD', thist, 0, rid)
        gather(g, 'ZADD', KEYS[3], 0, member)
        if status == STATUS.PENDING and fate == 'buffer' then
          redis.call('HSET', ek, 'pb', record, 'status', status)
          redis.call('HSET', key, 'buf', ov[2] .. ':' .. ready_at .. ':' .. rid)
          queued = queued + 1
        elseif status == STATUS.PENDING and lease == '1' and i == 1 then
          redis.call('HSET', ek, 'pb', record, 'status', STATUS.RUNNING, 'tok', 1, 'lt', clock())
          redis.call('SADD', act, rid)
          gather(g, 'ZADD', KEYS[6], clock() + tonumber(ARGV[2]), rid)
          queued, leased = queued + 1, leased + 1
        elseif status == STATUS.PENDING then
          redis.call('HSET', ek, 'pb', record, 'status', status)
          redis.call('SADD', act, rid)
          if ov == '' then
            gather(g, 'ZADD', KEYS[2], ready_at, rid)
          else  -- at once: a later run of this commit may cancel it, which takes it out of ready
            redis.call('ZADD', KEYS[2], ready_at, rid)
          end
          queued = queued + 1
        else  -- born ended (a skipped occurrence): counted in this minute's stats
          redis.call('HSET', ek, 'pb', record, 'status', status)
          ended['s' .. status] = (ended['s' .. status] or 0) + 1
        end
        if rule and status == STATUS.SKIPPED then
          skipped[#skipped + 1] = rid
        elseif rule and status == STATUS.PENDING then
          watch_run(watch, rule, rid)
        end
        created = created + 1
      end
    end
    gather(g, 'ZREM', KEYS[1], v[3])  -- its member and the new one differ: the order is free
    local member = '~:' .. id
    if following == '' then
      del[1] = 'next'
    else
      member = following .. ':' .. id
      set[#set + 1], set[#set + 2] = 'next', following
    end
    gather(g, 'ZADD', KEYS[1], 0, member)
    set[#set + 1], set[#set + 2], set[#set + 3], set[#set + 4] = 'nx', member, 'state', state
    if v[4] ~= state then
      if v[4] then by_state[v[4]] = (by_state[v[4]] or 0) - 1 end
      by_state[state] = (by_state[state] or 0) + 1
    end
    redis.call('HSET', key, unpack(set))
    if #del > 0 then redis.call('HDEL', key, unpack(del)) end
    if rule and #skipped > 0 then
      if rule.skipped and redis.call('HSETNX', key, 'as', skipped[1]) == 1 then
        local what = skip_message or 'missed: the suite was not running at their time'
        raise_alert(alerts_at, ALERT.SKIPPED, skipped[1], rule, #skipped .. ' occurrence(s) recorded SKIPPED, the first '
          .. skipped[1] .. ' (' .. what .. ')', clock())
      end
    elseif rule and queued > 0 then  -- a run with nothing skipped ends the skipping incident
      redis.call('HDEL', key, 'as')
    end
    out[c] = {created, queued, leased}
  end
end
flush(g)
add_counts(KEYS[4], by_state)
if add_counts(KEYS[5], ended) then redis.call('EXPIRE', KEYS[5], 90000, 'NX') end
return out
