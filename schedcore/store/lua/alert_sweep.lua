-- Look at the alert watch set's entries that are due (docs/alerts.md, "Rules"): raise LATE for
-- a run that has not started (PENDING, never leased: no `tok`) its limit after its nominal time,
-- and RUNNING_LONG for one whose attempt has run (RUNNING since its lease, `lt`) its limit. An
-- entry is removed in the call that raises its alert or finds there is nothing to watch (ended,
-- started in time); one still to decide is looked at again when its limit could be up. Replicas
-- sweeping at once cannot both raise one: the entry and the notification change together.
-- KEYS: 1 the alert watch set
-- ARGV: 1 most entries to look at, 2 execution hash prefix, 3-5 notification prefix, due set,
--       task notification list prefix
-- Returns {entries looked at, alerts raised}
local now = now_ms()
local at = {ARGV[3], ARGV[4], ARGV[5]}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local raised = 0
for _, member in ipairs(due) do
  local what, limit, eid, ns, channels = string.match(member, '^(%a):(%d+):([^:]+):([^:]*):(.*)$')
  local keep = false
  if eid then
    limit = tonumber(limit)
    local rule = {ns = ns, channels = channels}
    local v = redis.call('HMGET', ARGV[2] .. eid, 'status', 'tok', 'lt')
    if what == 'l' and v[1] == STATUS.PENDING and not v[2] then
      raise_alert(at, ALERT.LATE, eid, rule, 'not started ' .. math.floor((now - nominal_of(eid)) / 1000)
        .. ' s after its nominal time (the limit: ' .. math.floor(limit / 1000) .. ' s)', now)
      raised = raised + 1
    elseif what == 'r' and v[1] == STATUS.RUNNING then
      local since = tonumber(v[3] or now)
      if now - since >= limit then
        raise_alert(at, ALERT.RUNNING_LONG, eid, rule, 'still running ' .. math.floor((now - since) / 1000)
          .. ' s after its attempt started (the limit: ' .. math.floor(limit / 1000) .. ' s)', now)
        raised = raised + 1
      else
        redis.call('ZADD', KEYS[1], since + limit, member)
        keep = true
      end
    elseif what == 'r' and v[1] == STATUS.PENDING then  -- not running yet (or between attempts)
      redis.call('ZADD', KEYS[1], now + limit, member)
      keep = true
    end
  end
  if not keep then redis.call('ZREM', KEYS[1], member) end
end
return {#due, raised}
