-- Set aside leased executions that no linked executor can run (command targets, docs/engine.md
-- "Routing"): inflight -> the command ready queue at their current time, status PENDING, if the
-- caller's lease token still holds. No attempt and no loss is counted: they never left.
-- KEYS: 1 inflight, 2 command ready queue, then execution hashes
-- ARGV: {id, token} pairs
-- Returns how many were set aside
local now = now_ms()
local parked = 0
for i = 1, #ARGV, 2 do
  local id, key = ARGV[i], KEYS[3 + (i - 1) / 2]
  if redis.call('ZSCORE', KEYS[1], id) and redis.call('HGET', key, 'tok') == ARGV[i + 1] then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], now, id)
    redis.call('HSET', key, 'status', STATUS.PENDING)
    parked = parked + 1
  end
end
return parked
