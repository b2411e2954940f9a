-- Extend the leases of attempts still running, fenced by their tokens.
-- KEYS: 1 inflight, then execution hashes; ARGV: 1 lease ms, then per execution: id, token
-- Returns the number renewed.
local now = now_ms()
local renewed = 0
for i = 0, (#ARGV - 1) / 2 - 1 do
  local id, token = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  if redis.call('HGET', KEYS[2 + i], 'tok') == token and redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
    renewed = renewed + 1
  end
end
return renewed
