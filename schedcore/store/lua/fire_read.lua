-- Read-only: what firing needs of each due task, for the compare-and-set of fire_commit.lua.
-- KEYS: the task hashes
-- Returns per task {next (13-digit ms) or false, spec or false, srev}; false fields: the task
-- was deleted, completed or moved on since the peek.
local out = {}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'next', 'spec', 'srev')
  out[i] = {v[1] or false, v[2] or false, v[3] or '0'}
end
return out
