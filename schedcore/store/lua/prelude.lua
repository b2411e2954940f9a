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
