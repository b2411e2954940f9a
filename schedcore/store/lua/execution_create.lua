-- Record a new execution of an existing task, index it and queue it for dispatch, atomically.
-- The id is deterministic, so a second attempt to create the same execution finds the first.
-- A manual run (RunTask, RerunExecution) counts against its namespace's runs-per-minute quota: past it, nothing
-- is written.
-- The run joins its task's active set (docs/engine.md, "Overlap"): it counts against the task's
-- max_concurrent, and is never held back by it.
-- KEYS: 1 execution hash, 2 task hash, 3 task history, 4 global history, 5 ready queue,
--       6 audit stream, 7 this minute's run counts (namespace -> runs; "" name = not counted),
--       8 task active set
-- ARGV: 1 execution id, 2 record (protobuf), 3 status, 4 global history member,
--       5 ready score (ms), 6 last-execution summary (protobuf), 7 namespace ("" = not counted),
--       8 its runs-per-minute quota (0 = none), 9 audit stream bound ("" = record nothing),
--       10... the audit event's fields and values
-- Returns {"ok"} | {"missing"} (no such task) | {"exists"} | {"quota", "runs", runs this minute}
if redis.call('EXISTS', KEYS[2]) == 0 then return {'missing'} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
if ARGV[7] ~= '' then
  if not quota_fits(KEYS[7], ARGV[7], 1, ARGV[8]) then
    return {'quota', 'runs', quota_used(KEYS[7], ARGV[7])}
  end
  if redis.call('HINCRBY', KEYS[7], ARGV[7], 1) == 1 then redis.call('EXPIRE', KEYS[7], 120) end
end
redis.call('HSET', KEYS[1], 'pb', ARGV[2], 'status', ARGV[3])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
redis.call('SADD', KEYS[8], ARGV[1])
if newer_last(redis.call('HGET', KEYS[2], 'lastid'), ARGV[1]) then
  redis.call('HSET', KEYS[2], 'last', ARGV[6], 'lastid', ARGV[1])
end
if ARGV[9] and ARGV[9] ~= '' then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[9], '*', unpack(ARGV, 10))
end
return {'ok'}
