"""The Lua scripts the Redis backend runs (each in one round trip, atomically).

The rate limiter is a sliding window log per scope, timed by Redis's own
``TIME`` (microseconds), never by the hosts' clocks. Two keys per scope:

- ``{p}:l`` a sorted set with one member per admission, ``<id>:<tokens>``
  (score: its admission time); its size is the requests in the window,
- ``{p}:m`` a hash with ``used`` (the running sum of the members' tokens)
  and ``seq`` (the last admission's sequence number).

Per admission the script does O(log n) work (n: admissions in the window):
it reads the oldest member to see whether anything left the window (each
member is read and removed once, when it leaves: amortized O(log n)), counts
with ``ZCARD`` and adds one member. Only a refused call reads more: the
member at rank ``n - requests`` (O(log n)) and, for a tokens budget, at most
``SCAN_LEAVING`` of the oldest members to find when enough tokens leave.

The two keys of a scope share one hash tag, so the script also runs on a
Redis Cluster. Their TTL, two windows and a second, is renewed every half
window (``renewed`` in the hash) and whenever the log was empty: they
outlive every admission they hold by more than its window, and vanish
within about two windows of the last one.
"""

from __future__ import annotations

__all__ = ["ADMIT", "COOLDOWN_GET", "COOLDOWN_SET", "RECONCILE", "SCAN_LEAVING"]

#: Oldest members a refused call reads to find when enough tokens leave the
#: window; past them it waits for the last one read and asks again.
SCAN_LEAVING = 128

# Replaces reservations by usage: ARGV[first], ARGV[first + 1]... are pairs of
# (ticket, tokens used). A ticket still in the window becomes <id>:<used> with
# the same score; one that left (or was already replaced: the same pair sent
# twice) is skipped, so a pair may be sent again safely.
_RECONCILE_PAIRS = """
local function reconcile(log, first, used)
  for i = first, #ARGV, 2 do
    if redis.call('ZREM', log, ARGV[i]) == 1 then
      local base, sec, usec, old = string.match(ARGV[i], '^((%d+)%.(%d+)%.%d+:)(%d+)$')
      local score = tonumber(sec) * 1000000 + tonumber(usec)
      redis.call('ZADD', log, score, base .. ARGV[i + 1])
      used = used + tonumber(ARGV[i + 1]) - tonumber(old)
    end
  end
  return used
end
"""

#: KEYS: the log zset, the meta hash. ARGV: window (us), request limit (0:
#: none), token limit (0: none), tokens wanted, then (ticket, tokens used)
#: pairs to reconcile first (deferred by this process). Returns the ticket
#: (a bulk string ``<sec>.<usec>.<seq>:<tokens>``) when admitted, else the
#: microseconds to wait (an integer; -1: never).
ADMIT = (
    _RECONCILE_PAIRS
    + """
local log, meta = KEYS[1], KEYS[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local rlim = tonumber(ARGV[2])
local tlim = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local cutoff = now - window
local state = redis.call('HMGET', meta, 'used', 'seq', 'renewed')
local used = tonumber(state[1] or '0')
local seq = tonumber(state[2] or '0')
if #ARGV > 4 then used = reconcile(log, 5, used) end
local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
if #oldest > 0 and tonumber(oldest[2]) <= cutoff then
  local gone = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
  for i = 1, #gone do used = used - tonumber(string.match(gone[i], ':(%d+)$')) end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
end
local n = redis.call('ZCARD', log)
if n == 0 then used = 0 end
local wait = 0
if rlim > 0 and n >= rlim then
  local e = redis.call('ZRANGE', log, n - rlim, n - rlim, 'WITHSCORES')
  wait = tonumber(e[2]) + window - now
end
if tlim > 0 and used + want > tlim then
  local need = used + want - tlim
  local leaves = -1
  local entries = redis.call('ZRANGE', log, 0, SCAN - 1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    need = need - tonumber(string.match(entries[i], ':(%d+)$'))
    if need <= 0 or i + 1 == #entries then
      leaves = tonumber(entries[i + 1]) + window - now
      if need <= 0 then break end
    end
  end
  if leaves < 0 then
    redis.call('HSET', meta, 'used', used)
    return -1
  end
  if leaves > wait then wait = leaves end
end
if wait > 0 then
  redis.call('HSET', meta, 'used', used)
  return wait
end
seq = seq + 1
local ticket = t[1] .. '.' .. t[2] .. '.' .. seq .. ':' .. want
redis.call('ZADD', log, now, ticket)
if n > 0 and now - tonumber(state[3] or '0') < window / 2 then
  redis.call('HSET', meta, 'used', used + want, 'seq', seq)
else
  redis.call('HSET', meta, 'used', used + want, 'seq', seq, 'renewed', now)
  local ttl = math.floor(window / 500) + 1000
  redis.call('PEXPIRE', log, ttl)
  redis.call('PEXPIRE', meta, ttl)
end
return ticket
""".replace("SCAN - 1", str(SCAN_LEAVING - 1))
)

#: KEYS: the log zset, the meta hash. ARGV: (ticket, tokens used) pairs.
#: Returns how many tickets were still in the window.
RECONCILE = (
    _RECONCILE_PAIRS
    + """
local used = tonumber(redis.call('HGET', KEYS[2], 'used') or '0')
local after = reconcile(KEYS[1], 1, used)
if after ~= used then redis.call('HSET', KEYS[2], 'used', after) end
return 1
"""
)

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
