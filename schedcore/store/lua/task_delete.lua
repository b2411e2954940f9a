-- Delete a task and its index entries if its revision is still the expected one.
-- KEYS: 1 task hash, 2 name index, 3 next-run index, 4 task counts by state
-- ARGV: 1 task id, 2 expected rev ("" = any)
-- Returns {"ok"} | {"missing"} | {"conflict", current rev}
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return {'missing'} end
if ARGV[2] ~= '' and rev ~= ARGV[2] then return {'conflict', rev} end
redis.call('ZREM', KEYS[2], redis.call('HGET', KEYS[1], 'nm'))
redis.call('ZREM', KEYS[3], redis.call('HGET', KEYS[1], 'nx'))
redis.call('HINCRBY', KEYS[4], redis.call('HGET', KEYS[1], 'state'), -1)
redis.call('DEL', KEYS[1])
return {'ok'}
