-- Record the outcomes of delivery attempts, fenced by their lease tokens (docs/alerts.md,
-- invariant 3): an outcome whose token is not the notification's current one is dropped (its
-- lease ran out and another attempt holds it). "ok": DELIVERED; "retry": due again after the
-- delay given, unless its attempts reached the most allowed (then FAILED); "fail": FAILED now
-- (its channel is gone). An ended notification leaves the due set and expires after the
-- retention.
-- KEYS: 1 the due set
-- ARGV: 1 notification hash prefix, 2 retention seconds, 3 most attempts, then per outcome:
--       id, token, "ok" | "retry" | "fail", error ("" none), retry delay ms
-- Returns how many outcomes were recorded.
local now = now_ms()
local recorded = 0
local max_attempts = tonumber(ARGV[3])
for i = 4, #ARGV, 5 do
  local nid, token, outcome, err, delay = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
  local nk = ARGV[1] .. nid
  local v = redis.call('HMGET', nk, 'tok', 'st', 'a')
  if v[1] == token and v[2] == 'p' then
    recorded = recorded + 1
    if outcome == 'retry' and tonumber(v[3]) < max_attempts then
      redis.call('HSET', nk, 'err', err)
      redis.call('ZADD', KEYS[1], now + delay, nid)
    else
      if outcome == 'ok' then
        redis.call('HSET', nk, 'st', 'd', 'end', now)
        redis.call('HDEL', nk, 'err')
      else
        redis.call('HSET', nk, 'st', 'f', 'end', now, 'err', err)
      end
      redis.call('ZREM', KEYS[1], nid)
      redis.call('EXPIRE', nk, tonumber(ARGV[2]))
    end
  end
end
return recorded
