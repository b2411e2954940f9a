-- Record the ends of attempts, fenced by their lease tokens: a result from a holder whose lease
-- was taken over is dropped. A retry goes back to the ready queue at its backoff time.
-- An execution that ended for good is counted in this minute's stats (status, and lag bucket
-- when it started).
-- KEYS: 1 inflight, 2 ready, 3 this minute's execution stats,
--       then per execution: execution hash, its task hash
-- ARGV: per execution: id, token, status, record, retry-at ms ("" = final), summary ("" = none),
--       stats status ("" = not counted), lag bucket ("" = none)
-- Returns one character per execution, in order: "1" recorded, "0" dropped (stale token).
local recorded = {}
for i = 0, #ARGV / 8 - 1 do
  local a, ek, tk = 1 + 8 * i, KEYS[4 + 2 * i], KEYS[5 + 2 * i]
  recorded[i + 1] = '0'
  if redis.call('HGET', ek, 'tok') == ARGV[a + 1] and redis.call('ZSCORE', KEYS[1], ARGV[a]) then
    redis.call('ZREM', KEYS[1], ARGV[a])
    redis.call('HSET', ek, 'pb', ARGV[a + 3], 'status', ARGV[a + 2])
    redis.call('HDEL', ek, 'lost')  -- it came back from an executor: not a poison
    if ARGV[a + 4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[a + 4], ARGV[a]) end
    if ARGV[a + 5] ~= '' and redis.call('EXISTS', tk) == 1 then
      -- ids sort by nominal time: an older run finishing late does not replace a newer last
      local last = redis.call('HGET', tk, 'lastid')
      if not last or last <= ARGV[a] then
        redis.call('HSET', tk, 'last', ARGV[a + 5], 'lastid', ARGV[a])
      end
    end
    if ARGV[a + 6] ~= '' then
      redis.call('HINCRBY', KEYS[3], 's' .. ARGV[a + 6], 1)
      if ARGV[a + 7] ~= '' then redis.call('HINCRBY', KEYS[3], 'l' .. ARGV[a + 7], 1) end
      redis.call('EXPIRE', KEYS[3], 90000, 'NX')
    end
    recorded[i + 1] = '1'
  end
end
return table.concat(recorded)
