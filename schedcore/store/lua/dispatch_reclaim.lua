-- Take back attempts whose lease expired (their executor or scheduler died): back to the ready
-- queue at once, status PENDING, and a new token so the old holder's late result is dropped.
-- An execution that has lost its holder this many times (a target that kills its executor, say)
-- ends FAILED instead of being handed out for ever.
-- KEYS: 1 inflight, 2 ready, then execution hashes
-- ARGV: 1 most losses allowed, then the execution ids
-- Returns {ids queued again, ids failed}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local queued, failed = {}, {}
for i = 2, #ARGV do
  local id, key = ARGV[i], KEYS[1 + i]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= now then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HINCRBY', key, 'tok', 1)
    if redis.call('HINCRBY', key, 'lost', 1) > tonumber(ARGV[1]) then
      redis.call('HSET', key, 'status', 4)
      failed[#failed + 1] = id
    else
      redis.call('ZADD', KEYS[2], now, id)
      redis.call('HSET', key, 'status', 1)
      queued[#queued + 1] = id
    end
  end
end
return {queued, failed}
