-- Delete a notification channel and its index entry if its revision is still the expected one.
-- Tasks naming it keep its id; their notifications to it end FAILED (docs/alerts.md).
-- KEYS: 1 channel hash, 2 channel index, 3 audit stream
-- ARGV: 1 channel id, 2 expected rev ("" = any), 3 audit stream bound ("" = record nothing),
--       4... the audit event's fields and values
-- Returns {"ok"} | {"missing"} | {"conflict", current rev}
local v = redis.call('HMGET', KEYS[1], 'rev', 'ns', 'name')
if not v[1] then return {'missing'} end
if ARGV[2] ~= '' and v[1] ~= ARGV[2] then return {'conflict', v[1]} end
redis.call('ZREM', KEYS[2], channel_member(v[2], v[3], ARGV[1]))
redis.call('DEL', KEYS[1])
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
end
return {'ok'}
