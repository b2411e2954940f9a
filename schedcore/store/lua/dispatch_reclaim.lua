-- Take back attempts whose lease expired (their executor or scheduler died): back to the ready
-- queue at once, status PENDING, and a new token so the old holder's late result is dropped.
-- An execution that has lost its holder more often than allowed (a target that kills its
-- executor, say) is not handed out again: it stays in inflight under a fresh lease held by the
-- caller, who ends it FAILED through dispatch_complete (fenced, so a crash in between only
-- repeats this step when that lease expires).
-- One being cancelled (`cx`) whose executor did not stop it in time is not handed out again
-- either: the caller ends it CANCELLED the same way.
-- KEYS: 1 inflight, 2 ready, then execution hashes
-- ARGV: 1 most losses allowed, 2 lease ms, then the execution ids
-- Returns {ids queued again, {{id, token}, ...} to end FAILED, {{id, token, reason}, ...} to end
--          CANCELLED}
local now = now_ms()
local queued, failed, cancelled = {}, {}, {}
for i = 3, #ARGV do
  local id, key = ARGV[i], KEYS[i]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= now then
    redis.call('ZREM', KEYS[1], id)
    local token = redis.call('HINCRBY', key, 'tok', 1)
    -- every take-back, kept for good (unlike `lost`): an attempt may have reached its target
    -- once more per take-back, so this bounds the target's at-least-once repeats (audits, tests)
    redis.call('HINCRBY', key, 'rc', 1)
    local reason = redis.call('HGET', key, 'cx')
    if reason then
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
      cancelled[#cancelled + 1] = {id, token, reason}
    elseif redis.call('HINCRBY', key, 'lost', 1) > tonumber(ARGV[1]) then
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
      failed[#failed + 1] = {id, token}
    else
      redis.call('ZADD', KEYS[2], now, id)
      redis.call('HSET', key, 'status', STATUS.PENDING)
      queued[#queued + 1] = id
    end
  end
end
return {queued, failed, cancelled}
