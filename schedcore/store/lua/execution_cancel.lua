-- CancelExecution (docs/engine.md, "Cancel"): a PENDING execution ends CANCELLED now (out of its
-- queue, or out of its task's overlap buffer, and out of its task's active set, which may start
-- the buffered run); a RUNNING one is marked (`cx`) and ends CANCELLED once its executor stopped
-- it or its lease ran out. Audited either way.
-- KEYS: 1 execution hash, 2 ready, 3 ready:command, 4 task hash, 5 task active set, 6 this
--       minute's execution stats, 7 audit stream
-- ARGV: 1 execution id, 2 reason, 3 execution key prefix, 4 audit stream bound ("" = record
--       nothing), 5... the audit event's fields and values
-- Returns {"missing"} | {"ended", status} (it had ended) | {"cancelling"} (being cancelled
-- already) | {"cancelled"} (ended now) | {"requested"} (its executor is told to stop it)
local id = ARGV[1]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
local now = now_ms()
local outcome = cancel_execution(id, KEYS[1], ARGV[2], now, KEYS[2], KEYS[3])
if not outcome then
  if status == STATUS.PENDING or status == STATUS.RUNNING then return {'cancelling'} end
  return {'ended', status}
end
if outcome == 'ended' then
  local t = redis.call('HMGET', KEYS[4], 'buf', 'lastid', 'last')
  if t[1] and string.match(t[1], '^%d+:%d+:(.+)$') == id then redis.call('HDEL', KEYS[4], 'buf') end
  if t[2] == id and t[3] then  -- the task's last execution is this one: its summary says so
    redis.call('HSET', KEYS[4], 'last', t[3] .. pb_int(2, tonumber(STATUS.CANCELLED)) .. pb_time(4, now))
  end
  redis.call('SREM', KEYS[5], id)
  release_buffered(KEYS[4], KEYS[5], KEYS[2], ARGV[3], now)
  if redis.call('HINCRBY', KEYS[6], 's' .. STATUS.CANCELLED, 1) == 1 then
    redis.call('EXPIRE', KEYS[6], 90000, 'NX')
  end
end
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
end
return {outcome == 'ended' and 'cancelled' or 'requested'}
