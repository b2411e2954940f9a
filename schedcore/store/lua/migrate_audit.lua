-- Partition migration, fewer partitions (docs/partitions.md, "Changing P"): put the merged audit
-- stream (built beside it) in place of this partition's, once.
-- KEYS: 1 this partition's audit stream, 2 the merged stream, 3 the marker saying it was merged
-- Returns 1 when it renamed, 0 when the marker says an earlier run did.
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('RENAME', KEYS[2], KEYS[1])
redis.call('SET', KEYS[3], '1', 'EX', 172800)
return 1
