-- Lease ready executions for dispatch: ready -> inflight (scored by lease expiry), status RUNNING,
-- and a new fencing token that the result must carry back.
-- KEYS: 1 ready queue, 2 inflight
-- ARGV: 1 lease ms, 2 execution key prefix, 3 task key prefix, then the execution ids
-- Returns {{id, token, record, task spec or false}, ...}
local now = now_ms()
local expiry = now + tonumber(ARGV[1])
local ids = {}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
local execution_prefix, task_prefix = ARGV[2], ARGV[3]
-- one read of every candidate's ready score, one move of the leased ones to inflight
local scores = zmscore(KEYS[1], ids)
local g = gathered()
local taken = {}  -- an id given twice is leased once
local specs = {}  -- by task hash: executions of one task read its spec once
local out = {}
for i = 1, #ids do
  local id = ids[i]
  local ek, tk = execution_prefix .. id, task_prefix .. task_of_execution(id)
  local score = scores[i]
  if score and tonumber(score) <= now and not taken[id] then
    taken[id] = true
    gather(g, 'ZREM', KEYS[1], id)
    local v = redis.call('HMGET', ek, 'pb', 'tok')
    if v[1] then
      local token = tonumber(v[2] or '0') + 1
      redis.call('HSET', ek, 'status', STATUS.RUNNING, 'tok', token, 'lt', now)
      gather(g, 'ZADD', KEYS[2], expiry, id)
      if specs[tk] == nil then specs[tk] = redis.call('HGET', tk, 'spec') or false end
      out[#out + 1] = {id, token, v[1], specs[tk]}
    end
  end
end
flush(g)
return out
