-- Extend the leases of attempts still running, fenced by their tokens, and name those among them
-- whose execution is being cancelled (`cx`): their holder tells the executor to stop them.
-- KEYS: 1 inflight, then execution hashes; ARGV: 1 lease ms, then per execution: id, token
-- Returns {the number renewed, {{id, token, reason}, ...} being cancelled}
local now = now_ms()
local renewed, cancels = 0, {}
for i = 0, (#ARGV - 1) / 2 - 1 do
  local id, token = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local v = redis.call('HMGET', KEYS[2 + i], 'tok', 'cx')
  if v[1] == token and redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
    renewed = renewed + 1
    if v[2] then cancels[#cancels + 1] = {id, token, v[2]} end
  end
end
return {renewed, cancels}
