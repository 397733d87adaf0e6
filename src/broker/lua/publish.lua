-- Publishes a batch atomically: per channel a hash (epoch, seq, closed) and a capped stream.
-- KEYS: meta and stream of each channel, in pairs.
-- ARGV: n, ttl_ms, closed_ttl_ms, maxlen, now_us, n candidate epochs, n pub/sub topics,
--       then per event: channel index (1-based), name, data, retry, close ("1" or "0").
-- Returns {epoch, seq} per event, or the error "SSEHUB_CLOSED <index>" with nothing written.
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local closed_ttl = tonumber(ARGV[3])
local maxlen = tonumber(ARGV[4])
local now = ARGV[5]
for i = 1, n do
  if redis.call('HEXISTS', KEYS[2 * i - 1], 'closed') == 1 then
    return redis.error_reply('SSEHUB_CLOSED ' .. i)
  end
end
local epochs = {}
for i = 1, n do
  local meta = KEYS[2 * i - 1]
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = ARGV[5 + i]
    redis.call('DEL', KEYS[2 * i])
    redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
  end
  epochs[i] = epoch
end
local out = {}
local closing = {}
local at = 6 + 2 * n
while at <= #ARGV do
  local i = tonumber(ARGV[at])
  local seq = redis.call('HINCRBY', KEYS[2 * i - 1], 'seq', 1)
  local close = ARGV[at + 4]
  local payload = epochs[i] .. '\n' .. seq .. '\n' .. now .. '\n' .. close .. '\n'
    .. ARGV[at + 3] .. '\n' .. ARGV[at + 1] .. '\n' .. ARGV[at + 2]
  redis.call('XADD', KEYS[2 * i], 'MAXLEN', maxlen, seq .. '-0', 'm', payload)
  if close == '1' then
    redis.call('HSET', KEYS[2 * i - 1], 'closed', seq)
    closing[i] = true
  end
  redis.call('PUBLISH', ARGV[5 + n + i], payload)
  out[#out + 1] = {epochs[i], seq}
  at = at + 5
end
for i = 1, n do
  local life = ttl
  if closing[i] then life = closed_ttl end
  redis.call('PEXPIRE', KEYS[2 * i - 1], life)
  redis.call('PEXPIRE', KEYS[2 * i], life)
end
return out
