-- Lease ready executions for dispatch: ready -> inflight (scored by lease expiry), status RUNNING,
-- and a new fencing token that the result must carry back.
-- KEYS: 1 ready queue, 2 inflight, then per execution: execution hash, its task hash
-- ARGV: 1 lease ms, then the execution ids
-- Returns {{id, token, record, task spec or false}, ...}
local now = now_ms()
local expiry = now + tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  local id, ek, tk = ARGV[i], KEYS[1 + 2 * (i - 1)], KEYS[2 + 2 * (i - 1)]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= now then
    redis.call('ZREM', KEYS[1], id)
    local v = redis.call('HMGET', ek, 'pb', 'tok')
    if v[1] then
      local token = tonumber(v[2] or '0') + 1
      redis.call('HSET', ek, 'status', STATUS.RUNNING, 'tok', token)
      redis.call('ZADD', KEYS[2], expiry, id)
      out[#out + 1] = {id, token, v[1], redis.call('HGET', tk, 'spec') or false}
    end
  end
end
return out
