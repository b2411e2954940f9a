-- Partition migration, step 2 of a task's move (docs/partitions.md, "Changing P"): delete the
-- task, its history index and its executions from their old partition and uncount the task
-- there. A second run finds nothing and changes nothing.
-- KEYS: as migrate_in's, of the old partition
-- ARGV: 1 execution key prefix, 2... per execution: its id and its global history member
if redis.call('EXISTS', KEYS[1]) == 1 then
  local f = redis.call('HMGET', KEYS[1], 'nm', 'nx', 'state', 'ns', 'sz')
  if f[1] then redis.call('ZREM', KEYS[3], f[1]) end
  if f[2] then redis.call('ZREM', KEYS[4], f[2]) end
  if f[3] then redis.call('HINCRBY', KEYS[9], f[3], -1) end
  if f[4] then
    if redis.call('HINCRBY', KEYS[10], f[4], -1) <= 0 then redis.call('HDEL', KEYS[10], f[4]) end
    if redis.call('HINCRBY', KEYS[11], f[4], -tonumber(f[5] or '0')) <= 0 then
      redis.call('HDEL', KEYS[11], f[4])
    end
  end
  redis.call('DEL', KEYS[1])
end
redis.call('DEL', KEYS[2], KEYS[12])
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  redis.call('DEL', ARGV[1] .. id)
  redis.call('ZREM', KEYS[5], ARGV[i + 1])
  redis.call('ZREM', KEYS[6], id)
  redis.call('ZREM', KEYS[7], id)
  redis.call('ZREM', KEYS[8], id)
end
return 'ok'
