-- Read-only: what is due by the Redis server's clock (docs/guarantees.md, promise 4).
-- KEYS: 1 a sorted set; ARGV: 1 "lex" (members start with a 13-digit ms) or "score", 2 limit,
--       3 (lex only, optional) spread in [0, 1): start that far into the due members beyond the
--       first `limit` (0: the oldest first), so replicas racing on one burst read apart
-- Returns {now ms, due members (oldest first), ms of the first member not yet due or -1}
local now = now_ms()
local due, later
if ARGV[1] == 'lex' then
  local bound = string.format('%013d', now + 1)
  local offset, spread = 0, tonumber(ARGV[3] or '0')
  if spread > 0 then
    local count = redis.call('ZLEXCOUNT', KEYS[1], '-', '(' .. bound)
    offset = math.floor(spread * math.max(0, count - tonumber(ARGV[2])))
  end
  due = redis.call('ZRANGEBYLEX', KEYS[1], '-', '(' .. bound, 'LIMIT', offset, ARGV[2])
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
