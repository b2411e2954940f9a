-- Record the ends of attempts, fenced by their lease tokens: a result from a holder whose lease
-- was taken over is dropped. A retry goes back to the ready queue at its backoff time.
-- An execution that ended for good is counted in this minute's stats (status, and lag bucket
-- when it started), and its task is named in the answer when its history outgrew the limit, so
-- the caller trims only those (retention by count).
-- The completions come as one MessagePack blob (eight arguments each, packed by the client, were
-- most of the cost of recording).
-- KEYS: 1 inflight, 2 ready, 3 this minute's execution stats,
--       then per execution: execution hash, its task hash, its task's history
-- ARGV: 1 history limit per task (0: do not check), 2 MessagePack array of completions, each
--       {id, token, status, record, retry-at ms ("" = final), summary ("" = none),
--        stats status ("" = not counted), lag bucket ("" = none)}
-- Returns {one character per execution, in order: "1" recorded, "0" dropped (stale token),
--          {task ids whose history is over the limit}}
local items = cmsgpack.unpack(ARGV[2])
local limit = tonumber(ARGV[1])
local recorded = {}
local over, seen, counts = {}, {}, {}
for i = 1, #items do
  local c = items[i]
  local ek, tk, hk = KEYS[1 + 3 * i], KEYS[2 + 3 * i], KEYS[3 + 3 * i]
  recorded[i] = '0'
  if redis.call('HGET', ek, 'tok') == c[2] and redis.call('ZSCORE', KEYS[1], c[1]) then
    redis.call('ZREM', KEYS[1], c[1])
    redis.call('HSET', ek, 'pb', c[4], 'status', c[3])
    redis.call('HDEL', ek, 'lost')  -- it came back from an executor: not a poison
    if c[5] ~= '' then redis.call('ZADD', KEYS[2], c[5], c[1]) end
    if c[6] ~= '' and redis.call('EXISTS', tk) == 1 then
      -- ids sort by nominal time: an older run finishing late does not replace a newer last
      local last = redis.call('HGET', tk, 'lastid')
      if not last or last <= c[1] then
        redis.call('HSET', tk, 'last', c[6], 'lastid', c[1])
      end
    end
    if c[7] ~= '' then
      counts['s' .. c[7]] = (counts['s' .. c[7]] or 0) + 1
      if c[8] ~= '' then counts['l' .. c[8]] = (counts['l' .. c[8]] or 0) + 1 end
      if limit > 0 and not seen[hk] and redis.call('ZCARD', hk) > limit then
        seen[hk] = true
        over[#over + 1] = task_of_execution(c[1])
      end
    end
    recorded[i] = '1'
  end
end
local counted = false
for field, n in pairs(counts) do
  redis.call('HINCRBY', KEYS[3], field, n)
  counted = true
end
if counted then redis.call('EXPIRE', KEYS[3], 90000, 'NX') end
return {table.concat(recorded), over}
