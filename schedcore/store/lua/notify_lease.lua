-- Lease due notifications for delivery (docs/alerts.md, invariant 3): each one PENDING in the
-- due set at or before now gets a new token and one more attempt, and stays in the due set
-- scored by its lease's expiry, so a deliverer that dies leaves it to be leased again then.
-- An id whose hash ended or expired leaves the due set.
-- KEYS: 1 the due set
-- ARGV: 1 most to lease, 2 lease ms, 3 notification hash prefix
-- Returns {{id, token, attempt, kind, task id, execution id, channel id, namespace, message,
--          raised ms}, ...}
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, nid in ipairs(ids) do
  local nk = ARGV[3] .. nid
  local v = redis.call('HMGET', nk, 'k', 't', 'e', 'c', 'ns', 'm', 'st', 'at')
  if v[7] == 'p' then
    local token = redis.call('HINCRBY', nk, 'tok', 1)
    local attempt = redis.call('HINCRBY', nk, 'a', 1)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), nid)
    out[#out + 1] = {nid, token, attempt, v[1], v[2], v[3], v[4], v[5], v[6], v[8]}
  else
    redis.call('ZREM', KEYS[1], nid)
  end
end
return out
