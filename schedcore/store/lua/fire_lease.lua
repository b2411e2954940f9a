-- Lease due occurrences: for each task still due and not leased, take a lease (a fresh token and
-- an expiry) and move its next-run index entry to the expiry, so it comes due again if the
-- leaseholder dies. The `next` field keeps the nominal time, so whoever fires the occurrence
-- builds the same execution id.
-- KEYS: 1 next-run index, 2.. task hashes; ARGV: 1 lease ms, 2.. task ids (same order)
-- Returns {now, {{id, token, next, spec, srev}, ...}}
local now = now_ms()
local lease_ms = tonumber(ARGV[1])
local out = {}
for i = 2, #KEYS do
  local key, id = KEYS[i], ARGV[i]
  local v = redis.call('HMGET', key, 'next', 'lease', 'spec', 'srev', 'nx')
  if v[1] and tonumber(v[1]) <= now and (not v[2] or tonumber(v[2]) <= now) then
    local token = redis.call('HINCRBY', key, 'ltok', 1)
    local expiry = now + lease_ms
    local member = string.format('%013d', expiry) .. ':' .. id
    redis.call('ZREM', KEYS[1], v[5])
    redis.call('ZADD', KEYS[1], 0, member)
    redis.call('HSET', key, 'lease', expiry, 'nx', member)
    out[#out + 1] = {id, token, v[1], v[3], v[4] or '0'}
  end
end
return {now, out}
