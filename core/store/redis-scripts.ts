/**
 * The Lua scripts of the Redis store (core/store/redis.ts), run with EVALSHA: each is one atomic
 * step on Redis's clock. Tests: test/store/redis-store.test.ts.
 */

/**
 * The shared part of the bucket scripts (a Lua function). KEYS[1] holds {k: tokens, t: ms, and
 * one field per process holding leased tokens: "p:<instance>" = "<n> <lapses at ms>"}. Returns
 * the current time, the tokens refilled (absent key: a full bucket), the tokens other processes
 * hold (fields of lapsed leases are deleted: a process that died holds nothing after its TTL),
 * and whether any process still holds some.
 */
const BUCKET = `
local function bucket(key, perMs, burst, me)
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
  local h = redis.call('HGETALL', key)
  local k, t, others, holders = nil, nil, 0, false
  for i = 1, #h, 2 do
    local f, v = h[i], h[i + 1]
    if f == 'k' then k = tonumber(v)
    elseif f == 't' then t = tonumber(v)
    else
      local sp = string.find(v, ' ', 1, true)
      if tonumber(string.sub(v, sp + 1)) <= now then redis.call('HDEL', key, f)
      elseif f ~= me then others = others + tonumber(string.sub(v, 1, sp - 1)); holders = true end
    end
  end
  local tokens = burst
  if k then tokens = k + (now - t) * perMs end
  return now, tokens, others, holders
end
local function store(key, perMs, burst, tokens, now, holders, ttl)
  redis.call('HSET', key, 'k', tokens, 't', now)
  local ms = math.ceil((burst - tokens) / perMs) + 1000
  if holders then ms = ms + ttl end
  redis.call('PEXPIRE', key, ms)
end
`;

/**
 * Token bucket, as plugins/rate-limit does it in process, on Redis's clock: ARGV = perMs, burst,
 * force ('1': take even from an empty bucket, down to -burst), lease TTL. Tokens leased to
 * processes count as in the bucket (it holds at most burst less them). Returns {1 if taken else 0,
 * tokens left × 1000}. A bucket that refilled completely (and that no one holds tokens of) is the
 * same as none, so the key expires then.
 */
export const TAKE = BUCKET + `
local perMs, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now, tokens, others, holders = bucket(KEYS[1], perMs, burst, '')
if tokens > burst - others then tokens = burst - others end
if tokens < 1 and ARGV[3] ~= '1' then return {0, math.floor(tokens * 1000)} end
tokens = tokens - 1
if tokens < -burst then tokens = -burst end
store(KEYS[1], perMs, burst, tokens, now, holders, tonumber(ARGV[4]))
return {1, math.floor(tokens * 1000)}
`;

/**
 * Lease and give back: ARGV = perMs, burst, field of the calling process ("p:<instance>"), want,
 * keep (tokens it still holds and keeps), give (tokens it gives back), TTL ms. Adds `give` to the
 * bucket, grants g = min(want, floor(tokens)) (deducted), and records that the caller holds
 * keep + g until now + TTL (none: field deleted). Tokens it held before and neither keeps nor
 * gives back were used. The bucket never holds more than burst less what all processes hold, so
 * bucket + held never exceeds burst. Returns {g, tokens left × 1000}.
 */
export const LEASE = BUCKET + `
local perMs, burst, me = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local want, keep, give, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local now, tokens, others, holders = bucket(KEYS[1], perMs, burst, me)
tokens = tokens + give
if tokens > burst - others - keep then tokens = burst - others - keep end
local g = math.floor(tokens)
if g > want then g = want end
if g < 0 then g = 0 end
tokens = tokens - g
if keep + g > 0 then
  redis.call('HSET', KEYS[1], me, (keep + g) .. ' ' .. (now + ttl))
  holders = true
else
  redis.call('HDEL', KEYS[1], me)
end
store(KEYS[1], perMs, burst, tokens, now, holders, ttl)
return {g, math.floor(tokens * 1000)}
`;

/**
 * KEYS[1] = the supersede key; ARGV = token ("<instance> <n>"), channel prefix, ttl ms. The
 * previous holder is told on its process's channel, unless it is the claimer's own process
 * (same "<instance> " prefix).
 */
export const CLAIM = `
local prev = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
if prev and prev ~= ARGV[1] then
  local sp = string.find(prev, ' ', 1, true)
  if sp and string.sub(prev, 1, sp) ~= string.sub(ARGV[1], 1, sp) then
    redis.call('PUBLISH', ARGV[2] .. string.sub(prev, 1, sp - 1), prev)
  end
end
return 0
`;
