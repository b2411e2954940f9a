-- Record a new execution of an existing task, index it and queue it for dispatch, atomically.
-- The id is deterministic, so a second attempt to create the same execution finds the first.
-- KEYS: 1 execution hash, 2 task hash, 3 task history, 4 global history, 5 ready queue,
--       6 audit stream
-- ARGV: 1 execution id, 2 record (protobuf), 3 status, 4 global history member,
--       5 ready score (ms), 6 last-execution summary (protobuf), 7 audit stream bound ("" =
--       record nothing), 8... the audit event's fields and values
-- Returns {"ok"} | {"missing"} (no such task) | {"exists"}
if redis.call('EXISTS', KEYS[2]) == 0 then return {'missing'} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
redis.call('HSET', KEYS[1], 'pb', ARGV[2], 'status', ARGV[3])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
local last = redis.call('HGET', KEYS[2], 'lastid')
if not last or last <= ARGV[1] then
  redis.call('HSET', KEYS[2], 'last', ARGV[6], 'lastid', ARGV[1])
end
if ARGV[7] and ARGV[7] ~= '' then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[7], '*', unpack(ARGV, 8))
end
return {'ok'}
