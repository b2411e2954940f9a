-- Create a notification channel, unless its namespace has a channel of that name already.
-- KEYS: 1 channel hash, 2 channel index, 3 audit stream
-- ARGV: 1 channel id, 2 Channel protobuf (secrets sealed), 3 namespace, 4 name, 5 audit stream
--       bound ("" = record nothing), 6... the audit event's fields and values
-- Returns {"ok"} | {"collision"} (the id is taken) | {"name", id of the channel with that name}
if redis.call('EXISTS', KEYS[1]) == 1 then return {'collision'} end
local taken = channel_named(KEYS[2], ARGV[3], ARGV[4])
if taken then return {'name', taken} end
redis.call('HSET', KEYS[1], 'pb', ARGV[2], 'rev', 1, 'ns', ARGV[3], 'name', ARGV[4])
redis.call('ZADD', KEYS[2], 0, channel_member(ARGV[3], ARGV[4], ARGV[1]))
if ARGV[5] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 6))
end
return {'ok'}
