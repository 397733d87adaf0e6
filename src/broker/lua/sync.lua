-- Where a channel stands, creating its epoch if it has none (so every node agrees on it).
-- KEYS: meta, stream. ARGV: candidate epoch, ttl_ms. Returns {epoch, seq, closed or false}.
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'seq', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'closed')
