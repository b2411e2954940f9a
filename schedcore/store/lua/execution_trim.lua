-- Retention: delete the given executions if they are terminal, with their index entries.
-- Non-terminal executions (pending, running) are never removed.
-- KEYS: 1 global history, then per execution: execution hash, its task's history
-- ARGV: 1 number of executions n, then per execution: id, global history member;
--       then the terminal status codes
-- Returns the number deleted.
local n = tonumber(ARGV[1])
local terminal = {}
for i = 2 + 2 * n, #ARGV do terminal[ARGV[i]] = true end
local deleted = 0
for i = 0, n - 1 do
  local key, hist = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local id, member = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local status = redis.call('HGET', key, 'status')
  if not status or terminal[status] then
    redis.call('DEL', key)
    redis.call('ZREM', hist, id)
    redis.call('ZREM', KEYS[1], member)
    deleted = deleted + 1
  end
end
return deleted
