-- Replace a notification channel if its revision is still the one the caller read
-- (compare-and-set); a new name moves its index entry, unless the namespace has a channel of
-- that name already. Its namespace never changes.
-- KEYS: 1 channel hash, 2 channel index, 3 audit stream
-- ARGV: 1 channel id, 2 expected rev ("" = any), 3 Channel protobuf (secrets sealed), 4 name,
--       5 audit stream bound ("" = record nothing), 6... the audit event's fields and values
-- Returns {"ok", new rev} | {"missing"} | {"conflict", current rev}
--       | {"name", id of the channel with that name}
local v = redis.call('HMGET', KEYS[1], 'rev', 'ns', 'name')
if not v[1] then return {'missing'} end
if ARGV[2] ~= '' and v[1] ~= ARGV[2] then return {'conflict', v[1]} end
if v[3] ~= ARGV[4] then
  local taken = channel_named(KEYS[2], v[2], ARGV[4])
  if taken then return {'name', taken} end
  redis.call('ZREM', KEYS[2], channel_member(v[2], v[3], ARGV[1]))
  redis.call('ZADD', KEYS[2], 0, channel_member(v[2], ARGV[4], ARGV[1]))
  redis.call('HSET', KEYS[1], 'name', ARGV[4])
end
redis.call('HSET', KEYS[1], 'pb', ARGV[3])
if ARGV[5] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 6))
end
return {'ok', redis.call('HINCRBY', KEYS[1], 'rev', 1)}
