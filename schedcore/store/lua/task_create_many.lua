-- Create several tasks at once, all or none (BatchCreateTasks). Same writes as task_create.lua
-- per task. Nothing is written when a request id was already used for different contents or a
-- generated id collides; a request id used before with the same contents returns that task.
-- The tasks' fields come in one MessagePack blob (one argument instead of six per task: packing
-- arguments is most of the client's cost).
-- A batch that would take a namespace past one of its quotas writes nothing either (quotas are
-- checked per namespace, for the tasks the batch would create).
-- KEYS: 1 name index, 2 next-run index, 3 task counts by state, then every task's hash, then the
--       request-id key of each task that has a request id, in task order; then the task quota
--       usage (namespace -> tasks) and the task bytes quota usage (namespace -> bytes); last,
--       the audit stream
-- ARGV: 1 request-id ttl (s), 2 MessagePack array of [id, spec, state, next run (padded ms or
--       ""), name index member, request fingerprint ("" when no request id), namespace, its task
--       quota, its task bytes quota (quotas: 0 = none; a task counts the bytes of its spec)],
--       3 audit stream bound ("" = record nothing), 4... the fields and values every created
--       task's audit event shares (each event adds its task id and namespace)
-- Returns {"ok", per task: "" (created) or the prior "<task id>:<fingerprint>"}
--       | {"conflict", index (0-based), prior} | {"collision", index}
--       | {"quota", "tasks" or "bytes", namespace, counted now, what the batch would add}
local tasks = cmsgpack.unpack(ARGV[2])
local n = #tasks
local out = {'ok'}
local reqkey = {}
local next_req = 4 + n
for i = 1, n do
  local t = tasks[i]
  local prior = false
  if t[6] ~= '' then
    reqkey[i] = KEYS[next_req]
    next_req = next_req + 1
    prior = redis.call('GET', reqkey[i])
  end
  if prior then
    if string.sub(prior, 18) ~= t[6] then return {'conflict', i - 1, prior} end
    out[i + 1] = prior
  else
    if redis.call('EXISTS', KEYS[3 + i]) == 1 then return {'collision', i - 1} end
    out[i + 1] = ''
  end
end
local usage, stored = KEYS[#KEYS - 2], KEYS[#KEYS - 1]
local adding, growing = {}, {}
for i = 1, n do
  if out[i + 1] == '' then
    local ns = tasks[i][7]
    adding[ns] = (adding[ns] or 0) + 1
    growing[ns] = (growing[ns] or 0) + string.len(tasks[i][2])
  end
end
for i = 1, n do
  local ns = tasks[i][7]
  if adding[ns] then
    if not quota_fits(usage, ns, adding[ns], tasks[i][8]) then
      return {'quota', 'tasks', ns, quota_used(usage, ns), adding[ns]}
    end
    if not quota_fits(stored, ns, growing[ns], tasks[i][9]) then
      return {'quota', 'bytes', ns, quota_used(stored, ns), growing[ns]}
    end
  end
end
for ns, count in pairs(adding) do
  redis.call('HINCRBY', usage, ns, count)
  redis.call('HINCRBY', stored, ns, growing[ns])
end
-- The stream is trimmed once, after the batch's events, not on each XADD.
local audit = ARGV[3] ~= '' and KEYS[#KEYS]
for i = 1, n do
  if out[i + 1] == '' then
    local t, key = tasks[i], KEYS[3 + i]
    local id, state, nxt, nm = t[1], t[3], t[4], t[5]
    local member = '~:' .. id
    if nxt ~= '' then
      redis.call('HSET', key, 'next', nxt)
      member = nxt .. ':' .. id
    end
    redis.call('HSET', key, 'spec', t[2], 'rev', 1, 'srev', 1, 'state', state, 'nm', nm, 'nx', member, 'ns', t[7], 'sz', string.len(t[2]))
    redis.call('HINCRBY', KEYS[3], state, 1)
    redis.call('ZADD', KEYS[1], 0, nm)
    redis.call('ZADD', KEYS[2], 0, member)
    if reqkey[i] then
      redis.call('SET', reqkey[i], id .. ':' .. t[6], 'EX', ARGV[1])
    end
    if audit then
      redis.call('XADD', audit, '*', 'task', id, 'ns', t[7], unpack(ARGV, 4))
    end
  end
end
if audit then redis.call('XTRIM', audit, 'MAXLEN', '~', ARGV[3]) end
return out
