-- Take back attempts whose lease expired (their executor or scheduler died): back to the ready
-- queue at once, status PENDING, and a new token so the old holder's late result is dropped.
-- KEYS: 1 inflight, 2 ready, then execution hashes; ARGV: the execution ids
-- Returns the ids reclaimed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= now then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('ZADD', KEYS[2], now, ARGV[i])
    redis.call('HINCRBY', KEYS[2 + i], 'tok', 1)
    redis.call('HSET', KEYS[2 + i], 'status', 1)
    out[#out + 1] = ARGV[i]
  end
end
return out
