"""The Lua scripts the Redis backend runs (each in one round trip, atomically).

The rate limiter is a sliding window log per scope, timed by Redis's own
``TIME`` (microseconds), never by the hosts' clocks:

- ``{p}:r`` a sorted set of admissions (score: admission time),
- ``{p}:t`` a sorted set of token reservations (member ``<id>:<tokens>``),
- ``{p}:m`` a hash with ``used`` (the tokens inside the window) and ``seq``.

The three keys of a scope share one hash tag, so the script also runs on a
Redis Cluster. Every key expires one second after its window would be empty.
"""

from __future__ import annotations

__all__ = ["ADMIT", "COOLDOWN_GET", "COOLDOWN_SET", "RECONCILE"]

#: KEYS: requests zset, tokens zset, meta hash. ARGV: window (us), request limit
#: (0: none), token limit (0: none), tokens wanted. Returns {1, ticket} when
#: admitted, else {0, microseconds to wait} (-1: never).
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local rlim = tonumber(ARGV[2])
local tlim = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local cutoff = now - window
local wait = 0
if rlim > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  local n = redis.call('ZCARD', KEYS[1])
  if n >= rlim then
    local e = redis.call('ZRANGE', KEYS[1], n - rlim, n - rlim, 'WITHSCORES')
    wait = tonumber(e[2]) + window - now
  end
end
if tlim > 0 then
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  if #old > 0 then
    local gone = 0
    for i = 1, #old do gone = gone + tonumber(string.match(old[i], ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
    redis.call('HINCRBY', KEYS[3], 'used', -gone)
  end
  local used = 0
  if redis.call('ZCARD', KEYS[2]) == 0 then
    redis.call('HSET', KEYS[3], 'used', 0)
  else
    used = tonumber(redis.call('HGET', KEYS[3], 'used') or '0')
  end
  if used + want > tlim then
    local need = used + want - tlim
    local leaves = -1
    local entries = redis.call('ZRANGE', KEYS[2], 0, 255, 'WITHSCORES')
    for i = 1, #entries, 2 do
      need = need - tonumber(string.match(entries[i], ':(%d+)$'))
      if need <= 0 then
        leaves = tonumber(entries[i + 1]) + window - now
        break
      end
    end
    if leaves < 0 and #entries > 0 then
      leaves = tonumber(entries[#entries]) + window - now
    end
    if leaves < 0 then return {0, -1} end
    if leaves > wait then wait = leaves end
  end
end
if wait > 0 then return {0, wait} end
local seq = redis.call('HINCRBY', KEYS[3], 'seq', 1)
local id = t[1] .. '.' .. t[2] .. '.' .. seq
local ttl = math.floor(window / 1000) + 1000
if rlim > 0 then
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local ticket = id .. ':' .. want
if tlim > 0 then
  redis.call('ZADD', KEYS[2], now, ticket)
  redis.call('HINCRBY', KEYS[3], 'used', want)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('PEXPIRE', KEYS[3], ttl)
return {1, ticket}
"""

#: KEYS: tokens zset, meta hash. ARGV: ticket, tokens used. Moves the
#: reservation to the real count at the same instant; 0 when it already left.
RECONCILE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
local old = tonumber(string.match(ARGV[1], ':(%d+)$'))
local base = string.match(ARGV[1], '^(.*):%d+$')
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], score, base .. ':' .. ARGV[2])
redis.call('HINCRBY', KEYS[2], 'used', tonumber(ARGV[2]) - old)
return 1
"""

#: KEYS: the scope's cool-down zset. ARGV: name, until (unix seconds). Only
#: extends; drops expired members; the key expires with its last deadline.
COOLDOWN_SET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not cur) or tonumber(ARGV[2]) > tonumber(cur) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now))
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last > 0 then
  redis.call('PEXPIREAT', KEYS[1], string.format('%d', math.ceil(tonumber(last[2]) * 1000)))
end
return 1
"""

#: KEYS: the scope's cool-down zset. Returns {name, until, ...} still in force.
COOLDOWN_GET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZRANGEBYSCORE', KEYS[1], string.format('(%.6f', now), '+inf', 'WITHSCORES')
"""
