-- Read-only: what firing needs of each due task, for the compare-and-set of fire_commit.lua.
-- KEYS: 1 the next-run index (not read: it names the slot)
-- ARGV: 1 task key prefix, then the task ids
-- Returns per task {next (13-digit ms) or false, spec or false, srev}; false fields: the task
-- was deleted, completed or moved on since the peek.
local out = {}
local prefix = ARGV[1]
for i = 2, #ARGV do
  local v = redis.call('HMGET', prefix .. ARGV[i], 'next', 'spec', 'srev')
  out[i - 1] = {v[1] or false, v[2] or false, v[3] or '0'}
end
return out
