-- Create an API token, unless a token with the same secret exists (AUTH_BOOTSTRAP_TOKEN written
-- by several replicas starting at once: the first one wins, a revoked one stays revoked).
-- KEYS: 1 token hash, 2 secret-hash key, 3 token index, 4 audit stream
-- ARGV: 1 token id, 2 name, 3 role, 4 namespace, 5 secret's SHA-256 (hex), 6 create ms,
--       7 expire ms ("" = never), 8 created by, 9 index member, 10 "1" when it may create
--       command targets ("" = not), 11 audit stream bound ("" = record nothing), 12... the audit
--       event's fields and values
-- Returns {"ok"} | {"exists", id of the token with that secret} | {"collision"}
local prior = redis.call('GET', KEYS[2])
if prior then return {'exists', prior} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'collision'} end
redis.call('HSET', KEYS[1], 'name', ARGV[2], 'role', ARGV[3], 'ns', ARGV[4], 'hash', ARGV[5],
  'ctime', ARGV[6], 'by', ARGV[8])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'exp', ARGV[7]) end
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'cmd', ARGV[10]) end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[9])
if ARGV[11] ~= '' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[11], '*', unpack(ARGV, 12))
end
return {'ok'}
