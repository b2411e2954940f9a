-- Revoke an API token. Revoking a revoked token changes nothing and records nothing.
-- KEYS: 1 token hash, 2 audit stream
-- ARGV: 1 revoke ms, 2 audit stream bound ("" = record nothing), 3... the audit event's fields
--       and values
-- Returns {"ok"} | {"missing"} | {"noop"}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if redis.call('HEXISTS', KEYS[1], 'rtime') == 1 then return {'noop'} end
redis.call('HSET', KEYS[1], 'rtime', ARGV[1])
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
end
return {'ok'}
