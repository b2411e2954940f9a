-- Record the ends of attempts, fenced by their lease tokens: a result from a holder whose lease
-- was taken over is dropped. A retry goes back to the ready queue at its backoff time.
-- An execution that ended for good is counted in this minute's stats (status, and lag bucket
-- when it started), and its task is named in the answer when its history outgrew the limit, so
-- the caller trims only those (retention by count).
-- An execution being cancelled (`cx`: CancelExecution, or the CANCEL_OTHER overlap policy) that
-- would run again (a retry, or a hand-back unrun) ends CANCELLED instead. One that ended for
-- good leaves its task's active set, and the run waiting in the task's overlap buffer starts if
-- there is room now (docs/engine.md, "Overlap").
-- A task with pause_after_failures counts its executions that ended FAILED or TIMED_OUT in a row
-- (task hash `cf`; a SUCCEEDED one clears it) and is named in the answer once the count reaches
-- its threshold: the caller pauses it (docs/engine.md, "Pause after failures").
-- A task with an alert rule counts them the same way: the count reaching the rule's failures
-- raises FAILING once and opens an incident (task hash `ai`); the first SUCCEEDED one after it
-- closes the incident and raises RECOVERED when the rule asks (docs/alerts.md).
-- The completions come as one MessagePack blob (eight arguments each, packed by the client, were
-- most of the cost of recording).
-- KEYS: 1 inflight, 2 ready, 3 this minute's execution stats
-- ARGV: 1 history limit per task (0: do not check), 2 MessagePack array of completions, each
--       {id, token, status, record, retry-at ms ("" = final), summary ("" = none),
--        stats status ("" = not counted), lag bucket ("" = none), failures that pause the task
--        ("" = never), alert rule ("" = none: prelude's alert_rule), status message for an
--        alert ("" = none)}, 3-6 the key prefixes of execution hashes, task hashes, task
--        histories and active sets (each plus an id), 7-9 notification prefix, due set, task
--        notification list prefix (docs/alerts.md)
-- Returns {one character per execution, in order: "1" recorded, "0" dropped (stale token),
--          {task ids whose history is over the limit}, {{task id, failures in a row, execution id},
--          ...} to pause}
local items = cmsgpack.unpack(ARGV[2])
local limit = tonumber(ARGV[1])
local execution_prefix, task_prefix, history_prefix, active_prefix = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local alerts_at = {ARGV[7], ARGV[8], ARGV[9]}
local now  -- Redis time, read when first needed
local recorded = {}
local over, seen, counts, failing = {}, {}, {}, {}
local ids = {}
for i = 1, #items do ids[i] = items[i][1] end
local leased = zmscore(KEYS[1], ids)  -- one read of whether each is still leased
local g = gathered()  -- inflight and ready: one write each per call
local done = {}  -- an id given twice is recorded once
for i = 1, #items do
  local c = items[i]
  local id, token, status, record, retry_at, last, stats_status, lag, pause_after, rule, why =
    c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], alert_rule(c[10]), c[11]
  local task_id = task_of_execution(id)
  local ek, tk, hk = execution_prefix .. id, task_prefix .. task_id, history_prefix .. task_id
  recorded[i] = '0'
  local v = redis.call('HMGET', ek, 'tok', 'lost', 'cx')
  -- the token holds and the execution is still leased (and not recorded earlier in this call)
  if v[1] == token and leased[i] and not done[id] then
    done[id] = true
    gather(g, 'ZREM', KEYS[1], id)
    if v[3] and stats_status == '' then  -- being cancelled: it does not run again
      now = now or now_ms()
      status, retry_at, stats_status, lag = STATUS.CANCELLED, '', STATUS.CANCELLED, ''
      record = pb_ended(record, status, 'cancelled: ' .. v[3], now)
      if last ~= '' then last = last .. pb_int(2, tonumber(status)) .. pb_time(4, now) end
    end
    redis.call('HSET', ek, 'pb', record, 'status', status)
    if v[2] then redis.call('HDEL', ek, 'lost') end  -- it came back from an executor: not a poison
    if retry_at ~= '' then gather(g, 'ZADD', KEYS[2], retry_at, id) end
    if last ~= '' then
      local t = redis.call('HMGET', tk, 'state', 'lastid')  -- every task hash has a state
      if t[1] and newer_last(t[2], id) then
        redis.call('HSET', tk, 'last', last, 'lastid', id)
      end
    end
    if stats_status ~= '' then
      local act = active_prefix .. task_id
      if redis.call('SREM', act, id) == 1 or v[3] then
        now = now or now_ms()
        release_buffered(tk, act, KEYS[2], execution_prefix, now)
      end
      if (pause_after ~= '' or rule) and redis.call('EXISTS', tk) == 1 then
        if status == STATUS.FAILED or status == STATUS.TIMED_OUT then
          local n = redis.call('HINCRBY', tk, 'cf', 1)
          if pause_after ~= '' and n >= tonumber(pause_after) then failing[#failing + 1] = {task_id, n, id} end
          if rule and rule.failures and n >= rule.failures and redis.call('HSETNX', tk, 'ai', id) == 1 then
            now = now or now_ms()
            local said = n == 1 and '1 execution ended FAILED or TIMED_OUT: '
              or n .. ' executions in a row ended FAILED or TIMED_OUT; the last: '
            raise_alert(alerts_at, ALERT.FAILING, id, rule, said .. why, now)
          end
        elseif status == STATUS.SUCCEEDED then
          local open = redis.call('HGET', tk, 'ai')
          redis.call('HDEL', tk, 'cf', 'ai')
          if open and rule and rule.recovery then
            now = now or now_ms()
            raise_alert(alerts_at, ALERT.RECOVERED, id, rule, 'succeeded again, after the FAILING alert raised by ' .. open, now)
          end
        end
      end
      counts['s' .. stats_status] = (counts['s' .. stats_status] or 0) + 1
      if lag ~= '' then counts['l' .. lag] = (counts['l' .. lag] or 0) + 1 end
      if limit > 0 and not seen[hk] and redis.call('ZCARD', hk) > limit then
        seen[hk] = true
        over[#over + 1] = task_id
      end
    end
    recorded[i] = '1'
  end
end
flush(g)
if add_counts(KEYS[3], counts) then redis.call('EXPIRE', KEYS[3], 90000, 'NX') end
return {table.concat(recorded), over, failing}
