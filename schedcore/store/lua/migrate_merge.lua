-- Partition migration, fewer partitions (docs/partitions.md, "Changing P"): add a dropped
-- partition's counter hash into the one that takes its place, once.
-- KEYS: 1 the counter hash here, 2 the marker saying it was added (this partition's)
-- ARGV: 1 PTTL of the dropped hash (ms, <= 0 = none), 2... field, value pairs to add
-- Returns 1 when it added them, 0 when the marker says an earlier run did.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
local ttl = tonumber(ARGV[1])
if ttl > 0 and redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('SET', KEYS[2], '1', 'EX', 172800)
return 1
