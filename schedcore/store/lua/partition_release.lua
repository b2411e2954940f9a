-- Give a partition's owner lease up, if the caller still holds it.
-- KEYS[1] the partition's owner key; ARGV[1] instance id. Returns 1 when it was released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
