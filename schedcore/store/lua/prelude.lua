-- Prelude: prepended to every script in this folder (schedcore/store/scripts.py).
-- Per-namespace quotas are checked and counted in the same script as the write they bound, so
-- concurrent writes through any number of api replicas cannot pass a limit together.

-- How many of `usage`'s `field` are counted now (a hash of namespace -> count).
local function quota_used(usage, field)
  return tonumber(redis.call('HGET', usage, field) or '0')
end

-- Whether `want` more fit under `limit` (0: no limit).
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
