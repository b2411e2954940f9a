-- Take or keep a partition's owner lease (docs/partitions.md, "Schedulers share partitions").
-- KEYS[1] the partition's owner key; ARGV[1] instance id, ARGV[2] lease ms.
-- Returns 1 when the caller holds the lease for ARGV[2] ms from now, 0 when another does.
local owner = redis.call('GET', KEYS[1])
if owner == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
