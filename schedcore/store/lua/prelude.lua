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
