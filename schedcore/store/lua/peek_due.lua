-- Read-only: what is due by the Redis server's clock (docs/guarantees.md, promise 4).
-- KEYS: 1 a sorted set; ARGV: 1 "lex" (members start with a 13-digit ms) or "score", 2 limit
-- Returns {now ms, due members (oldest first), ms of the first member not yet due or -1}
local now = now_ms()
local due, later
if ARGV[1] == 'lex' then
  local bound = string.format('%013d', now + 1)
  due = redis.call('ZRANGEBYLEX', KEYS[1], '-', '(' .. bound, 'LIMIT', 0, ARGV[2])
  later = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. bound, '+', 'LIMIT', 0, 1)
  if later[1] and string.sub(later[1], 1, 1) ~= '~' then
    return {now, due, tonumber(string.sub(later[1], 1, 13))}
  end
else
  due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[2])
  later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if later[2] then return {now, due, tonumber(later[2])} end
end
return {now, due, -1}
