-- Prelude: prepended to every script in this folder (schedcore/store/scripts.py).
-- Per-namespace quotas are checked and counted in the same script as the write they bound, so
-- concurrent writes through any number of api replicas cannot pass a limit together.

-- How many of `usage`'s `field` are counted now (a hash of namespace -> count).
local function quota_used(usage, field)
  return tonumber(redis.call('HGET', usage, field) or '0')
end

-- Whether `want` more fit under `limit` (0: no limit; negative: no room, the other partitions
-- already hold the whole limit: schedcore/store/quotas.py, share).
local function quota_fits(usage, field, want, limit)
  limit = tonumber(limit)
  return limit == 0 or quota_used(usage, field) + want <= limit
end

-- Execution status codes as stored in an execution hash's `status` field: the numbers of the
-- protobuf enum ExecutionStatus (tests/unit/test_lua_prelude.py checks them against it).
local STATUS = {
  PENDING = '1', RUNNING = '2', SUCCEEDED = '3', FAILED = '4', TIMED_OUT = '5', CANCELLED = '6',
  SKIPPED = '7',
}

-- Redis server time in milliseconds.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Per-item keys the engine's hot scripts build from a key prefix they are given and an id
-- (schedcore/store/keys.py defines the prefixes): the same hash tag as the keys they declare, so
-- the same slot (docs/redis-layout.md, "Keys a script builds").

-- The task id of an execution id ("<16 hex>-<13 digits>[-m<4 hex>]", schedcore/store/keys.py).
local function task_of_execution(execution_id)
  return string.sub(execution_id, 1, 16)
end

-- Whether execution `id` may become its task's last (`current`: the task's lastid, or false):
-- ids sort by nominal time, so an older run ending late never replaces a newer last.
local function newer_last(current, id)
  return not current or current <= id
end

-- Add n to field of hash key for each field -> n in `counts` (skipping zeros): one HINCRBY per
-- field per batch, not per item. Returns whether anything was added.
local function add_counts(key, counts)
  local added = false
  for field, n in pairs(counts) do
    if n ~= 0 then
      redis.call('HINCRBY', key, field, n)
      added = true
    end
  end
  return added
end

-- Writes to one key gathered over a loop and sent as one variadic command per key and command
-- at the end (`ZADD k s1 m1 s2 m2 ...`, `ZREM k m1 m2 ...`): one call per batch instead of one
-- per item, most of the cost of a script (docs/engine.md, "Cost per execution"). Only for writes
-- whose order against the loop's other writes does not matter; flushed in chunks of an even
-- number of arguments (Lua's unpack has a stack limit).
local GATHER_CHUNK = 1000

local function gathered()
  return {order = {}, args = {}}
end

local function gather(g, command, key, a, b)
  local id = command .. ' ' .. key
  local args = g.args[id]
  if not args then
    args = {}
    g.args[id] = args
    g.order[#g.order + 1] = {command, key, id}
  end
  args[#args + 1] = a
  if b ~= nil then args[#args + 1] = b end
end

local function flush(g)
  for _, o in ipairs(g.order) do
    local args = g.args[o[3]]
    for s = 1, #args, GATHER_CHUNK do
      redis.call(o[1], o[2], unpack(args, s, math.min(s + GATHER_CHUNK - 1, #args)))
    end
  end
end

-- ZMSCORE of key for every member of the list `members`, in chunks: their scores (false: absent).
local function zmscore(key, members)
  local out = {}
  for s = 1, #members, GATHER_CHUNK do
    local part = redis.call('ZMSCORE', key, unpack(members, s, math.min(s + GATHER_CHUNK - 1, #members)))
    for i = 1, #part do out[#out + 1] = part[i] end
  end
  return out
end

-- Protobuf wire encoding of the few Execution fields a script sets in a stored record. Appending
-- a field to a serialized message sets it: the last value of a scalar field wins, and a message
-- field (a Timestamp) merges into the one before (protobuf's merging of concatenated messages).
-- Field numbers of scheduler.v1.Execution (tests/unit/test_lua_prelude.py checks them).
local FIELD = {attempt = 7, finish_time = 6, status = 8, status_message = 12, cancel_time = 18}

local function pb_varint(n)
  local out = {}
  while n >= 128 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end

local function pb_bytes(field, s)
  return pb_varint(field * 8 + 2) .. pb_varint(#s) .. s
end

local function pb_int(field, n)
  return pb_varint(field * 8) .. pb_varint(n)
end

-- A Timestamp field of `ms` (whole seconds and nanos: both set, so a merge replaces both).
local function pb_time(field, ms)
  return pb_bytes(field, pb_int(1, math.floor(ms / 1000)) .. pb_int(2, (ms % 1000) * 1000000))
end

-- The record `record` ended `status` at `ms`, with `message`.
local function pb_ended(record, status, message, ms)
  return record .. pb_int(FIELD.status, tonumber(status)) .. pb_bytes(FIELD.status_message, message)
    .. pb_time(FIELD.finish_time, ms)
end

-- Overlap (docs/engine.md, "Overlap"): each task's active set names its PENDING and RUNNING
-- executions; the one waiting in the task's buffer (task hash `buf`) is not in it until it starts.

-- The task's active executions, oldest first: the members of `act` whose records are PENDING or
-- RUNNING. The others (ended by a path that did not remove them, or gone) are removed.
local function live_active(act, execution_prefix)
  local live = {}
  for _, id in ipairs(redis.call('SMEMBERS', act)) do
    local s = redis.call('HGET', execution_prefix .. id, 'status')
    if s == STATUS.PENDING or s == STATUS.RUNNING then
      live[#live + 1] = id
    else
      redis.call('SREM', act, id)
    end
  end
  table.sort(live)
  return live
end

-- Up to five of `ids`, for a status message ("a, b and 3 more").
local function some_ids(ids)
  local shown = {}
  for i = 1, math.min(5, #ids) do shown[i] = ids[i] end
  local text = table.concat(shown, ', ')
  if #ids > 5 then text = text .. ' and ' .. (#ids - 5) .. ' more' end
  return text
end

-- The run waiting in task `tk`'s buffer starts (into `ready` at its start time, and into the
-- active set) once fewer than the limit it waits under are active. Returns its id if it did.
local function release_buffered(tk, act, ready, execution_prefix, now)
  local buf = redis.call('HGET', tk, 'buf')
  if not buf then return false end
  local limit, at, id = string.match(buf, '^(%d+):(%d+):(.+)$')
  if #live_active(act, execution_prefix) >= tonumber(limit) then return false end
  redis.call('HDEL', tk, 'buf')
  if redis.call('HGET', execution_prefix .. id, 'status') ~= STATUS.PENDING then return false end
  redis.call('SADD', act, id)
  redis.call('ZADD', ready, math.max(tonumber(at), now), id)
  return id
end

-- Cancel execution `id` (hash `ek`) for `reason`. A PENDING one ends CANCELLED now (out of
-- `ready` and `ready_command`; the caller takes it out of its task's active set or buffer). A
-- RUNNING one is marked (`cx`: the reason; cancel_time in its record) and ends CANCELLED once
-- its executor stopped it (dispatch_complete.lua) or its lease ran out (dispatch_reclaim.lua).
-- Returns 'ended', 'requested', or false (it had ended, or was being cancelled already).
local function cancel_execution(id, ek, reason, now, ready, ready_command)
  local v = redis.call('HMGET', ek, 'status', 'cx', 'pb')
  if v[1] == STATUS.PENDING then
    redis.call('ZREM', ready, id)
    redis.call('ZREM', ready_command, id)
    redis.call('HSET', ek, 'status', STATUS.CANCELLED, 'pb', pb_ended(v[3], STATUS.CANCELLED, 'cancelled: ' .. reason, now))
    return 'ended'
  elseif v[1] == STATUS.RUNNING and not v[2] then
    redis.call('HSET', ek, 'cx', reason, 'pb', v[3] .. pb_time(FIELD.cancel_time, now))
    return 'requested'
  end
  return false
end

-- What overlap rule `ov` ({policy, limit}: "skip", "buffer" or "cancel") makes of a new run
-- `rid` of the task with hash `tk` and active set `act` (docs/engine.md, "Overlap"): 'run',
-- 'buffer' (it waits in the task's buffer) or 'skip', and the status message for its record.
-- Executions it cancels leave `act`, and `on_cancelled()` is called for each one ended now.
local function overlap_fate(ov, tk, act, rid, execution_prefix, ready, ready_command, now, on_cancelled)
  local policy, limit = ov[1], tonumber(ov[2])
  local live = live_active(act, execution_prefix)
  if #live < limit then return 'run' end
  local buffered = redis.call('HGET', tk, 'buf')
  buffered = buffered and string.match(buffered, '^%d+:%d+:(.+)$')
  if policy == 'cancel' then
    local ending, need = 0, #live - limit + 1
    for _, o in ipairs(live) do
      if redis.call('HEXISTS', execution_prefix .. o, 'cx') == 1 then ending = ending + 1 end
    end
    local why = 'the overlap policy CANCEL_OTHER: ' .. rid .. ' came due'
    for _, o in ipairs(live) do
      if ending >= need then break end
      local r = cancel_execution(o, execution_prefix .. o, why, now, ready, ready_command)
      if r == 'ended' then
        redis.call('SREM', act, o)
        on_cancelled()
      end
      if r then ending = ending + 1 end
    end
    live = live_active(act, execution_prefix)
    if #live < limit then return 'run' end
    if buffered then  -- the newest waits: the one waiting before it never starts
      redis.call('HDEL', tk, 'buf')
      local superseded = 'the overlap policy CANCEL_OTHER: superseded by ' .. rid
      if cancel_execution(buffered, execution_prefix .. buffered, superseded, now, ready, ready_command) then
        on_cancelled()
      end
    end
    return 'buffer', 'waiting: the overlap policy CANCEL_OTHER starts it once ' .. some_ids(live) .. ' stopped'
  end
  if policy == 'buffer' and not buffered then
    return 'buffer', 'waiting: the overlap policy BUFFER_ONE starts it when one of ' .. some_ids(live) .. ' ended'
  end
  local message = 'overlap: ' .. some_ids(live) .. ' still active (max_concurrent ' .. limit .. ')'
  if buffered then message = message .. '; ' .. buffered .. ' waits already' end
  return 'skip', message
end

-- Alerts (docs/alerts.md). Kinds as stored in a notification's `k` (the numbers of the protobuf
-- enum AlertKind, checked by tests/unit/test_lua_prelude.py) and the name in its id.
local ALERT = {
  FAILING = {'1', 'failing'}, RECOVERED = {'2', 'recovered'}, SKIPPED = {'3', 'skipped'},
  LATE = {'4', 'late'}, RUNNING_LONG = {'5', 'running_long'},
}
local NOTIFICATIONS_PER_TASK = 200

-- The parts of a task's alert rule as the engine passes it: "<failures>|<flags>|<namespace>|
-- <channel ids, comma-separated>|<late ms>|<running ms>" (schedcore/store/alerts.py, rule_arg);
-- flags: "r" recovery, "s" skipped. Returns nil for "".
local function alert_rule(rule)
  if rule == nil or rule == '' then return nil end
  local failures, flags, ns, channels, late, running =
    string.match(rule, '^(%d*)|(%a*)|([^|]*)|([^|]*)|(%d*)|(%d*)$')
  return {
    failures = tonumber(failures), recovery = string.find(flags, 'r', 1, true) ~= nil,
    skipped = string.find(flags, 's', 1, true) ~= nil, ns = ns, channels = channels,
    late = tonumber(late), running = tonumber(running),
  }
end

-- Raise alert `kind` (an ALERT entry) about execution `eid` to each channel of the rule: one
-- notification per channel, `<kind>.<execution id>.<channel id>`, created only if it does not
-- exist (the same id on every replica: invariant 1), due now, and listed under its task (the
-- newest NOTIFICATIONS_PER_TASK). `at` = {notification prefix, due set, task list prefix}.
local function raise_alert(at, kind, eid, rule, message, now)
  local task_id = task_of_execution(eid)
  for channel in string.gmatch(rule.channels, '[^,]+') do
    local nid = kind[2] .. '.' .. eid .. '.' .. channel
    local nk = at[1] .. nid
    if redis.call('EXISTS', nk) == 0 then
      redis.call('HSET', nk, 'k', kind[1], 't', task_id, 'e', eid, 'c', channel, 'ns', rule.ns,
        'm', message, 'at', now, 'st', 'p', 'a', 0)
      redis.call('ZADD', at[2], now, nid)
      local list = at[3] .. task_id
      redis.call('ZADD', list, now, nid)
      redis.call('ZREMRANGEBYRANK', list, 0, -NOTIFICATIONS_PER_TASK - 1)
    end
  end
end

-- The nominal time (ms) of execution id `eid` (its 13 digits after the task id).
local function nominal_of(eid)
  return tonumber(string.sub(eid, 18, 30))
end

-- Put run `rid` in the alert watch set for each limit its rule has: `<l|r>:<limit ms>:<rid>:
-- <namespace>:<channels>`, first looked at when the limit is up after its nominal time (it
-- cannot have started, or run that long, before); alert_sweep.lua does the rest.
local function watch_run(watch, rule, rid)
  local tail = ':' .. rid .. ':' .. rule.ns .. ':' .. rule.channels
  if rule.late then redis.call('ZADD', watch, nominal_of(rid) + rule.late, 'l:' .. rule.late .. tail) end
  if rule.running then redis.call('ZADD', watch, nominal_of(rid) + rule.running, 'r:' .. rule.running .. tail) end
end

-- Notification channels (partition 0's: schedcore/store/channels.py). A member of the channel
-- index is "<namespace>\0<name>\0<id>" (schedcore/store/keys.py, channel_member).
local function channel_member(ns, name, id)
  return ns .. '\0' .. name .. '\0' .. id
end

-- The id of a channel named `name` in namespace `ns` in the index `index`, or false: names are
-- unique per namespace.
local function channel_named(index, ns, name)
  local prefix = channel_member(ns, name, '')
  local upper = string.sub(prefix, 1, -2) .. '\1'
  local found = redis.call('ZRANGEBYLEX', index, '[' .. prefix, '(' .. upper, 'LIMIT', 0, 1)
  if #found == 0 then return false end
  return string.sub(found[1], #prefix + 1)
end
