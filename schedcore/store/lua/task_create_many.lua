-- Create several tasks at once, all or none (BatchCreateTasks). Same writes as task_create.lua
-- per task. Nothing is written when a request id was already used for different contents or a
-- generated id collides; a request id used before with the same contents returns that task.
-- KEYS: 1 name index, 2 next-run index, 3 task counts by state, then per task: task hash,
--       request-id key
-- ARGV: 1 request-id ttl (s), then per task: id, spec, state, next run (padded ms, or ""),
--       name index member, request fingerprint ("" when no request id)
-- Returns {"ok", per task: "" (created) or the prior "<task id>:<fingerprint>"}
--       | {"conflict", index (0-based), prior} | {"collision", index}
local n = (#ARGV - 1) / 6
local out = {'ok'}
for i = 0, n - 1 do
  local fingerprint = ARGV[7 + 6 * i]
  local prior = false
  if fingerprint ~= '' then prior = redis.call('GET', KEYS[5 + 2 * i]) end
  if prior then
    if string.sub(prior, 18) ~= fingerprint then return {'conflict', i, prior} end
    out[#out + 1] = prior
  else
    if redis.call('EXISTS', KEYS[4 + 2 * i]) == 1 then return {'collision', i} end
    out[#out + 1] = ''
  end
end
for i = 0, n - 1 do
  if out[i + 2] == '' then
    local a, key = 2 + 6 * i, KEYS[4 + 2 * i]
    local id, state, nxt, nm = ARGV[a], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
    local member = '~:' .. id
    if nxt ~= '' then
      redis.call('HSET', key, 'next', nxt)
      member = nxt .. ':' .. id
    end
    redis.call('HSET', key, 'spec', ARGV[a + 1], 'rev', 1, 'srev', 1, 'state', state, 'nm', nm, 'nx', member)
    redis.call('HINCRBY', KEYS[3], state, 1)
    redis.call('ZADD', KEYS[1], 0, nm)
    redis.call('ZADD', KEYS[2], 0, member)
    if ARGV[a + 5] ~= '' then
      redis.call('SET', KEYS[5 + 2 * i], id .. ':' .. ARGV[a + 5], 'EX', ARGV[1])
    end
  end
end
return out
