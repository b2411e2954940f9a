-- Record a new execution of an existing task, index it and queue it for dispatch, atomically.
-- The id is deterministic, so a second attempt to create the same execution finds the first.
-- A manual run (RunTask, RerunExecution) counts against its namespace's runs-per-minute quota:
-- past it, nothing is written.
-- The run joins its task's active set (docs/engine.md, "Overlap"). With an overlap rule (a
-- BackfillTask run) it is decided as a fired occurrence is (overlap_fate): it runs, waits in the
-- task's buffer, or is written SKIPPED (counted in this minute's stats, with any execution the
-- rule cancelled); without one (RunTask, RerunExecution) it is never held back. With an alert
-- rule that has a late-start or running-long limit, a run created PENDING joins the alert watch
-- set, as a fired one does (docs/alerts.md).
-- KEYS: 1 execution hash, 2 task hash, 3 task history, 4 global history, 5 ready queue,
--       6 audit stream, 7 this minute's run counts (namespace -> runs; "" name = not counted),
--       8 task active set, 9 command ready queue, 10 this minute's execution stats, 11 the
--       alert watch set
-- ARGV: 1 execution id, 2 record (protobuf), 3 status, 4 global history member,
--       5 ready score (ms), 6 last-execution summary (protobuf), 7 namespace ("" = not counted),
--       8 its runs-per-minute quota (0 = none), 9 overlap rule ("<policy>:<limit>"; "" none),
--       10 execution key prefix, 11 alert rule ("" none: prelude's alert_rule), 12 audit stream
--       bound ("" = record nothing), 13... the audit event's fields and values
-- Returns {"ok", "run" | "buffer" | "skip"} | {"missing"} (no such task) | {"exists"}
--       | {"quota", "runs", runs this minute}
if redis.call('EXISTS', KEYS[2]) == 0 then return {'missing'} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
if ARGV[7] ~= '' then
  if not quota_fits(KEYS[7], ARGV[7], 1, ARGV[8]) then
    return {'quota', 'runs', quota_used(KEYS[7], ARGV[7])}
  end
  if redis.call('HINCRBY', KEYS[7], ARGV[7], 1) == 1 then redis.call('EXPIRE', KEYS[7], 120) end
end
local id, record, status, summary = ARGV[1], ARGV[2], ARGV[3], ARGV[6]
local fate, message = 'run', nil
if ARGV[9] ~= '' then
  local policy, limit = string.match(ARGV[9], '^(%a+):(%d+)$')
  local now = now_ms()
  fate, message = overlap_fate({policy, limit}, KEYS[2], KEYS[8], id, ARGV[10], KEYS[5], KEYS[9], now, function()
    if redis.call('HINCRBY', KEYS[10], 's' .. STATUS.CANCELLED, 1) == 1 then redis.call('EXPIRE', KEYS[10], 90000, 'NX') end
  end)
  if fate == 'skip' then
    status = STATUS.SKIPPED
    record = pb_ended(record, status, message, now) .. pb_int(FIELD.attempt, 0)
    summary = summary .. pb_int(2, tonumber(status)) .. pb_time(4, now)
    if redis.call('HINCRBY', KEYS[10], 's' .. status, 1) == 1 then redis.call('EXPIRE', KEYS[10], 90000, 'NX') end
  elseif fate == 'buffer' then
    record = record .. pb_bytes(FIELD.status_message, message)
    redis.call('HSET', KEYS[2], 'buf', limit .. ':' .. ARGV[5] .. ':' .. id)
  end
end
redis.call('HSET', KEYS[1], 'pb', record, 'status', status)
redis.call('ZADD', KEYS[3], 0, id)
redis.call('ZADD', KEYS[4], 0, ARGV[4])
if fate == 'run' then
  redis.call('ZADD', KEYS[5], ARGV[5], id)
  redis.call('SADD', KEYS[8], id)
end
if newer_last(redis.call('HGET', KEYS[2], 'lastid'), id) then
  redis.call('HSET', KEYS[2], 'last', summary, 'lastid', id)
end
local rule = alert_rule(ARGV[11])
if rule and status == STATUS.PENDING then watch_run(KEYS[11], rule, id) end
if ARGV[12] and ARGV[12] ~= '' then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[12], '*', unpack(ARGV, 13))
end
return {'ok', fate}
