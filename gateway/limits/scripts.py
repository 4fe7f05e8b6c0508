"""The Lua scripts: admission (check everything, then apply everything), settlement,
and spend floors (budget counters restored from the ledger, :data:`RAISE_FLOORS`).

Arithmetic: Lua 5.1 has only doubles, so every quantity is an integer below
2**53 (limits up to 1e11 per minute times a 60 000 ms window), divisions are
corrected to exact floor division, and numbers are written back with
``%.0f`` (``tostring`` would round them to 14 digits).

A rate bucket (GCRA in its token-bucket form, burst = limit, emission
interval = window / limit) is a level and a time. The level counts units times
the window in ms: a full bucket holds ``limit * window``, a request of cost
``c`` takes ``c * window``, and every ms refills ``limit``, exact in integers.
A missing field is a full bucket.

Stale in-flight entries (older than ``max_age``) are dropped only when a check
would fail without dropping them: the decision is the same as dropping them
eagerly, and the common path reads two fields instead of a whole hash.

Arguments of both scripts (key and field layout in :mod:`gateway.limits.plan`)::

    KEYS: per scope, its state hash and its budget hash
    ARGV: now_ms ("" = Redis TIME), member, day id, month id, numbers, spec
      numbers (admit):  window_ms, max_age_ms, tokens, reserve, ms to day end, ms to month end
      numbers (settle): window_ms, max_age_ms, tokens to charge (actual - estimated),
                        reserve, actual cost, ms to day end, ms to month end
      spec: per scope rpm, tpm, max_concurrent, daily, monthly (-1 = none)

Admission reply: ``code, index, retry_ms``, then per scope ``requests remaining,
requests reset ms, tokens remaining, tokens reset ms`` (-1 where no such limit).
``index`` is ``8 * scope + check`` (checks 1 rpm, 2 tpm, 3 concurrency, 4 day, 5 month).
"""

from __future__ import annotations

_COMMON = """
local function fdiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local function cdiv(a, b) return -fdiv(-a, b) end
local function int(x) return string.format('%.0f', x) end
local function nums(text)
  local out = {}
  for v in string.gmatch(text, '[^,]+') do out[#out + 1] = tonumber(v) end
  return out
end
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local member, day, month = ARGV[2], ARGV[3], ARGV[4]
local arg, spec = nums(ARGV[5]), nums(ARGV[6])
local window, max_age = arg[1], arg[2]
local DAY = 86400000
local function bucket(level_text, ts_text, limit)
  local cap = limit * window
  if not level_text then return cap, now end
  local level, ts = tonumber(level_text), tonumber(ts_text)
  if level > cap then level = cap end
  if now > ts then
    local need = cap - level
    if need > 0 then
      if now - ts >= cdiv(need, limit) then level = cap else level = level + (now - ts) * limit end
    end
    ts = now
  end
  return level, ts
end
local function until_full(level, limit) return cdiv(limit * window - level, limit) end
"""

ADMIT = (
    _COMMON
    + """
local tokens, reserve, day_left, month_left = arg[3], arg[4], arg[5], arg[6]
local n = #spec / 5
local code, index, retry = 0, 0, 0
local function fail(c, i, r)
  if c > code then code = c; index = i end
  if r > retry then retry = r end
end
local function take(level, cost, limit, i)
  if cost > limit then fail(3, i, 0)
  elseif cost * window > level then fail(2, i, cdiv(cost * window - level, limit)) end
end
local function hdel_all(key, fields)
  for i = 1, #fields, 1000 do
    redis.call('HDEL', key, unpack(fields, i, math.min(i + 999, #fields)))
  end
end
local function reap_slots(key)
  local all, gone = redis.call('HGETALL', key), {}
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'c:' and tonumber(all[i + 1]) <= now - max_age then
      gone[#gone + 1] = all[i]
    end
  end
  if #gone > 0 then
    hdel_all(key, gone)
    redis.call('HINCRBY', key, 'cn', -#gone)
  end
  return #gone
end
local function reap_budget(key)
  local all, gone, freed = redis.call('HGETALL', key), {}, {}
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'f:' then
      local start, amount, d, m = string.match(all[i + 1], '^(%-?%d+):(%d+):([^:]*):([^:]*)$')
      if tonumber(start) <= now - max_age then
        gone[#gone + 1] = all[i]
        if d ~= '' then freed[d] = (freed[d] or 0) + tonumber(amount) end
        if m ~= '' then freed[m] = (freed[m] or 0) + tonumber(amount) end
      end
    end
  end
  if #gone > 0 then
    hdel_all(key, gone)
    for period, amount in pairs(freed) do
      redis.call('HINCRBY', key, period .. ':r', int(-amount))
    end
  end
  return #gone
end
local function short(h, daily, monthly)
  local d = (tonumber(h[1]) or 0) + (tonumber(h[2]) or 0)
  local m = (tonumber(h[3]) or 0) + (tonumber(h[4]) or 0)
  return daily >= 0 and (d >= daily or d + reserve > daily),
    monthly >= 0 and (m >= monthly or m + reserve > monthly)
end
local saved = {}
for s = 1, n do
  local o, base = 5 * (s - 1), 8 * (s - 1)
  local rpm, tpm, conc = spec[o + 1], spec[o + 2], spec[o + 3]
  local daily, monthly = spec[o + 4], spec[o + 5]
  local x = {}
  if rpm >= 0 or tpm >= 0 or conc >= 0 then
    local h = redis.call('HMGET', KEYS[2 * s - 1], 'rl', 'rt', 'tl', 'tt', 'cn')
    if rpm >= 0 then
      x.rl, x.rt = bucket(h[1], h[2], rpm)
      take(x.rl, 1, rpm, base + 1)
    end
    if tpm >= 0 then
      x.tl, x.tt = bucket(h[3], h[4], tpm)
      take(x.tl, tokens, tpm, base + 2)
    end
    if conc >= 0 then
      x.cn = tonumber(h[5]) or 0
      if x.cn >= conc then
        x.cn = x.cn - reap_slots(KEYS[2 * s - 1])
        if x.cn >= conc then fail(1, base + 3, 1000) end
      end
    end
  end
  if daily >= 0 or monthly >= 0 then
    local key = KEYS[2 * s]
    local h = redis.call('HMGET', key, day .. ':s', day .. ':r', month .. ':s', month .. ':r')
    local dshort, mshort = short(h, daily, monthly)
    if (dshort or mshort) and reap_budget(key) > 0 then
      h = redis.call('HMGET', key, day .. ':s', day .. ':r', month .. ':s', month .. ':r')
      dshort, mshort = short(h, daily, monthly)
    end
    if dshort then fail(4, base + 4, day_left) end
    if mshort then fail(4, base + 5, month_left) end
    x.h = h
  end
  saved[s] = x
end
if code == 0 then
  for s = 1, n do
    local o, x = 5 * (s - 1), saved[s]
    local rpm, tpm, conc = spec[o + 1], spec[o + 2], spec[o + 3]
  local daily, monthly = spec[o + 4], spec[o + 5]
    local f, ttl = {}, 0
    if rpm >= 0 then
      x.rl = x.rl - window
      f[#f + 1] = 'rl'; f[#f + 1] = int(x.rl); f[#f + 1] = 'rt'; f[#f + 1] = int(x.rt)
      ttl = math.max(ttl, until_full(x.rl, rpm) + window)
    end
    if tpm >= 0 then
      x.tl = x.tl - tokens * window
      f[#f + 1] = 'tl'; f[#f + 1] = int(x.tl); f[#f + 1] = 'tt'; f[#f + 1] = int(x.tt)
      ttl = math.max(ttl, until_full(x.tl, tpm) + window)
    end
    if conc >= 0 then
      f[#f + 1] = 'cn'; f[#f + 1] = int(x.cn + 1)
      f[#f + 1] = 'c:' .. member; f[#f + 1] = int(now)
      ttl = math.max(ttl, max_age + window)
    end
    if #f > 0 then
      redis.call('HSET', KEYS[2 * s - 1], unpack(f))
      redis.call('PEXPIRE', KEYS[2 * s - 1], int(ttl))
    end
    if (daily >= 0 or monthly >= 0) and reserve > 0 then
      local d, m = '', ''
      if daily >= 0 then d = day end
      if monthly >= 0 then m = month end
      local g = {'f:' .. member, int(now) .. ':' .. int(reserve) .. ':' .. d .. ':' .. m}
      if daily >= 0 then
        g[#g + 1] = day .. ':r'; g[#g + 1] = int((tonumber(x.h[2]) or 0) + reserve)
      end
      if monthly >= 0 then
        g[#g + 1] = month .. ':r'; g[#g + 1] = int((tonumber(x.h[4]) or 0) + reserve)
      end
      if redis.call('HSET', KEYS[2 * s], unpack(g)) > 1 then
        local left = day_left
        if monthly >= 0 then left = month_left end
        redis.call('PEXPIRE', KEYS[2 * s], int(left + DAY))
      end
    end
  end
end
local out = {code, index, retry}
for s = 1, n do
  local o, x = 5 * (s - 1), saved[s]
  local rpm, tpm = spec[o + 1], spec[o + 2]
  if rpm >= 0 then
    out[#out + 1] = math.max(0, fdiv(x.rl, window)); out[#out + 1] = until_full(x.rl, rpm)
  else
    out[#out + 1] = -1; out[#out + 1] = -1
  end
  if tpm >= 0 then
    out[#out + 1] = math.max(0, fdiv(x.tl, window)); out[#out + 1] = until_full(x.tl, tpm)
  else
    out[#out + 1] = -1; out[#out + 1] = -1
  end
end
return out
"""
)

SETTLE = (
    _COMMON
    + """
local delta, reserve, actual, day_left, month_left = arg[3], arg[4], arg[5], arg[6], arg[7]
for s = 1, #spec / 5 do
  local o = 5 * (s - 1)
  local rpm, tpm, conc = spec[o + 1], spec[o + 2], spec[o + 3]
  local daily, monthly = spec[o + 4], spec[o + 5]
  local key = KEYS[2 * s - 1]
  if conc >= 0 or (tpm >= 0 and delta ~= 0) then
    local h = redis.call('HMGET', key, 'rl', 'rt', 'tl', 'tt', 'cn')
    local f = {}
    if conc >= 0 and redis.call('HDEL', key, 'c:' .. member) == 1 then
      f[#f + 1] = 'cn'; f[#f + 1] = int((tonumber(h[5]) or 1) - 1)
    end
    local ttl = -1
    if tpm >= 0 and delta ~= 0 then
      local level, ts = bucket(h[3], h[4], tpm)
      level = math.min(level - delta * window, tpm * window)
      f[#f + 1] = 'tl'; f[#f + 1] = int(level); f[#f + 1] = 'tt'; f[#f + 1] = int(ts)
      ttl = until_full(level, tpm) + window
      if rpm >= 0 then ttl = math.max(ttl, until_full(bucket(h[1], h[2], rpm), rpm) + window) end
      if conc >= 0 then ttl = math.max(ttl, max_age + window) end
    end
    if #f > 0 then redis.call('HSET', key, unpack(f)) end
    if ttl >= 0 then redis.call('PEXPIRE', key, int(ttl)) end
  end
  if daily >= 0 or monthly >= 0 then
    local bkey, removed = KEYS[2 * s], 0
    if reserve > 0 then removed = redis.call('HDEL', bkey, 'f:' .. member) end
    if removed == 1 or actual > 0 then
      local h = redis.call('HMGET', bkey, day .. ':s', day .. ':r', month .. ':s', month .. ':r')
      local g = {}
      if daily >= 0 then
        g[#g + 1] = day .. ':s'; g[#g + 1] = int((tonumber(h[1]) or 0) + actual)
        if removed == 1 then
          g[#g + 1] = day .. ':r'; g[#g + 1] = int((tonumber(h[2]) or 0) - reserve)
        end
      end
      if monthly >= 0 then
        g[#g + 1] = month .. ':s'; g[#g + 1] = int((tonumber(h[3]) or 0) + actual)
        if removed == 1 then
          g[#g + 1] = month .. ':r'; g[#g + 1] = int((tonumber(h[4]) or 0) - reserve)
        end
      end
      if redis.call('HSET', bkey, unpack(g)) > 0 then
        local left = day_left
        if monthly >= 0 then left = month_left end
        redis.call('PEXPIRE', bkey, int(left + DAY))
      end
    end
  end
end
return 0
"""
)

#: Spend floors (:mod:`gateway.limits.floors`): raise each budget hash's spent
#: counters of the day and the month to at least the given amounts, never lower
#: them, leave reservations alone, and give a hash written an expiry no shorter
#: than the given one. KEYS: budget hashes of one tenant; ARGV: day id, month id,
#: expiry ms, then per key its day and month floor. Replies the counters raised.
RAISE_FLOORS = """
local day, month, ttl = ARGV[1] .. ':s', ARGV[2] .. ':s', tonumber(ARGV[3])
local raised = 0
for i = 1, #KEYS do
  local d, m = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local h = redis.call('HMGET', KEYS[i], day, month)
  local g = {}
  if tonumber(d) > (tonumber(h[1]) or 0) then g[#g + 1] = day; g[#g + 1] = d end
  if tonumber(m) > (tonumber(h[2]) or 0) then g[#g + 1] = month; g[#g + 1] = m end
  if #g > 0 then
    redis.call('HSET', KEYS[i], unpack(g))
    raised = raised + #g / 2
    if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
return raised
"""
