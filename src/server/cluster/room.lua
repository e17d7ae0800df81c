-- tickcast: the room's state in Redis, changed only by this script.
--
-- Every change a node makes to the room runs here, as one script call,
-- so Redis runs it atomically: the check ("is that name free?"), the
-- state change (the name is now taken) and the numbered event in the
-- room's log (NICK 42 old new) happen together or not at all. Two nodes
-- can never both take a name, and the log's order is the room's order.
--
-- KEYS[1]  the room's key prefix, `tickcast:{ROOM}:` (the braces are a
--          Redis Cluster hash tag: every key of a room in one slot)
-- ARGV[1]  the operation (see OPS at the end)
-- ARGV[2]  the EPOCH the node serves; a different one in Redis means
--          Redis lost the room (restarted empty): refused with 'epoch'
-- ARGV[3]  a deadline in Redis's clock (ms), 0 for none: a call that
--          Redis runs later than that (it was paused, the node gave up
--          waiting and told its client `ERR unavailable`) does nothing
-- ARGV[4]  the node's id
-- ARGV[5]  --history: how many events the log keeps
-- ARGV[6]  --history-bytes: how many bytes of events the log keeps
-- ARGV[7…] the operation's own arguments
--
-- Keys: epoch (string), seq (counter), log (stream: the numbered events,
-- entry ID `SEQ-0`), ctl (stream: direct messages between nodes), names
-- (hash: lowercased name -> client id), who (hash: id -> name), home
-- (hash: id -> node), keys (hash: session KEY -> id), keyof (hash: id ->
-- KEY), gone (hash: KEY of a departed client -> its name), goneorder
-- (sorted set: KEY by the SEQ of its LEAVE), nodes (hash: node -> its last
-- heartbeat, ms), ticker (string with a time to live: the node that
-- ticks), ids (counter: client ids, handed out in blocks).
--
-- Every answer is a table whose first element is a word: 'ok' and what
-- was asked, or why not ('epoch', 'late', 'gone', 'taken', ...). The
-- script never returns an error on purpose: one refused call must not
-- look like a failure of the others pipelined with it. (Redis itself may
-- still fail a call: out of memory under `noeviction`, say. The node
-- then treats Redis as lost.)

local p = KEYS[1]
local op, epoch, deadline, node, keep, keep_bytes =
    ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- A node silent for this long (ms) while another beats is down; its
-- members are announced `node-down` by the next node that beats.
local DEAD_AFTER = 10000

-- Keeps the log within --history events and --history-bytes bytes
-- after the event `seq` of `size` bytes was added: the oldest go first,
-- the newest always stays (every node must be able to read it). `sizes`
-- lists the size of each event in the log, oldest first, and `bytes` is
-- their sum, so the oldest can go without reading them.
local function trim(seq, size)
  local n = redis.call('RPUSH', p .. 'sizes', size)
  local bytes = redis.call('INCRBY', p .. 'bytes', size)
  local kept = n
  while kept > 1 and (kept > keep or bytes > keep_bytes) do
    bytes = bytes - tonumber(redis.call('LPOP', p .. 'sizes'))
    kept = kept - 1
  end
  if kept < n then
    redis.call('SET', p .. 'bytes', bytes)
    redis.call('XTRIM', p .. 'log', 'MINID', (seq - kept + 1) .. '-0')
  end
end

-- Appends one numbered event: `VERB SEQ REST` (+ LF) with the next SEQ.
-- `id` is the client the event is about, `name` its name afterwards.
local function append(verb, rest, id, name, tail)
  local seq = redis.call('INCR', p .. 'seq')
  local line = verb .. ' ' .. seq .. ' ' .. rest .. '\n' .. (tail or '')
  redis.call('XADD', p .. 'log', seq .. '-0',
    'e', epoch, 'l', line, 'v', verb, 'm', id or '', 'n', name or '')
  trim(seq, #line)
  return seq
end

-- Removes a client from the room and appends its LEAVE. With
-- `remember`, its KEY gives its name back to a later connection for as
-- long as --history events.
local function leave(id, reason, remember)
  local name = redis.call('HGET', p .. 'who', id)
  if not name then return nil end
  redis.call('HDEL', p .. 'names', string.lower(name))
  redis.call('HDEL', p .. 'who', id)
  redis.call('HDEL', p .. 'home', id)
  local key = redis.call('HGET', p .. 'keyof', id)
  local seq = append('LEAVE', name .. ' ' .. reason, id, name)
  if key then
    redis.call('HDEL', p .. 'keys', key)
    redis.call('HDEL', p .. 'keyof', id)
    if remember then
      redis.call('HSET', p .. 'gone', key, name)
      redis.call('ZADD', p .. 'goneorder', seq, key)
    end
  end
  -- Forget departed keys that --history events have passed since.
  local old = redis.call('ZRANGEBYSCORE', p .. 'goneorder', '-inf', seq - keep)
  for _, k in ipairs(old) do
    redis.call('HDEL', p .. 'gone', k)
    redis.call('ZREM', p .. 'goneorder', k)
  end
  return seq
end

-- The naming rules, again (the node checked them; a room's log must not
-- depend on every node being right): 1 to 32 of A-Z a-z 0-9 _ - .
local function valid_name(name)
  return #name >= 1 and #name <= 32 and string.find(name, '^[%w_%.%-]+$') ~= nil
end

-- Text in a line: no line break (the node checked it too).
local function valid_text(text)
  return string.find(text, '[\r\n]') == nil
end

-- Renames a client if the new name is free; appends its NICK.
local function rename(id, new)
  if not valid_name(new) then return {'invalid'} end
  local holder = redis.call('HGET', p .. 'names', string.lower(new))
  if holder and holder ~= id then return {'taken'} end
  local old = redis.call('HGET', p .. 'who', id)
  if not old then return {'gone'} end
  if old == new then return {'ok', 0} end
  redis.call('HDEL', p .. 'names', string.lower(old))
  redis.call('HSET', p .. 'names', string.lower(new), id)
  redis.call('HSET', p .. 'who', id, new)
  return {'ok', append('NICK', old .. ' ' .. new, id, new)}
end

local OPS = {}

-- A node starts (or starts again after Redis lost the room): the room's
-- EPOCH (made now if the room is new), and a snapshot that the node's
-- stream reader continues from: the newest SEQ, who is in the room, and
-- the newest --history events of the log.
function OPS.start(fresh_epoch)
  redis.call('SET', p .. 'epoch', fresh_epoch, 'NX')
  local e = redis.call('GET', p .. 'epoch')
  redis.call('HSET', p .. 'nodes', node, now)
  local seq = tonumber(redis.call('GET', p .. 'seq') or '0')
  local recent = redis.call('XREVRANGE', p .. 'log', '+', '-', 'COUNT', keep)
  return {'ok', e, seq, redis.call('HGETALL', p .. 'who'), recent}
end

-- A client joins under its guest name.
function OPS.join(id, key)
  local name = 'guest-' .. id
  redis.call('HSET', p .. 'names', name, id)
  redis.call('HSET', p .. 'who', id, name)
  redis.call('HSET', p .. 'home', id, node)
  redis.call('HSET', p .. 'keys', key, id)
  redis.call('HSET', p .. 'keyof', id, key)
  return {'ok', append('JOIN', name, id, name)}
end

-- A member says something (`text` is empty or starts with a space).
function OPS.say(id, text)
  if not valid_text(text) then return {'invalid'} end
  local name = redis.call('HGET', p .. 'who', id)
  if not name then return {'gone'} end
  return {'ok', append('MSG', name .. text, id, name)}
end

-- A member's payload, as DATA.
function OPS.data(id, bytes)
  local name = redis.call('HGET', p .. 'who', id)
  if not name then return {'gone'} end
  return {'ok', append('DATA', name .. ' ' .. #bytes, id, name, bytes .. '\n')}
end

function OPS.nick(id, new)
  return rename(id, new)
end

function OPS.leave(id, reason, remember)
  local seq = leave(id, reason, remember == '1')
  if not seq then return {'gone'} end
  return {'ok', seq}
end

-- A new connection presents an older connection's KEY: the older one
-- leaves (`replaced`) if it is still in the room, and the new one takes
-- its name if nobody else has it.
function OPS.takeover(id, key)
  local name
  local holder = redis.call('HGET', p .. 'keys', key)
  if holder then
    name = redis.call('HGET', p .. 'who', holder)
    leave(holder, 'replaced', false)
  else
    name = redis.call('HGET', p .. 'gone', key)
    if not name then return {'bad-key'} end
    redis.call('HDEL', p .. 'gone', key)
    redis.call('ZREM', p .. 'goneorder', key)
  end
  if not name or string.sub(string.lower(name), 1, 6) == 'guest-' then
    return {'ok', ''}
  end
  local renamed = rename(id, name)
  if renamed[1] == 'taken' then return {'taken', name} end
  return {'ok', name}
end

-- A direct message: queued on the ctl stream for the node of its
-- target, which every node reads.
function OPS.dm(id, to, text)
  if not valid_text(text) then return {'invalid'} end
  local target = redis.call('HGET', p .. 'names', string.lower(to))
  if not target then return {'no-such-user'} end
  local from = redis.call('HGET', p .. 'who', id) or '*'
  local name = redis.call('HGET', p .. 'who', target)
  local line = 'DM ' .. from .. text .. '\n'
  -- Direct messages are live only: at most 1000 in the stream, none
  -- older than a minute (a node that was away that long has lost its
  -- clients anyway).
  redis.call('XADD', p .. 'ctl', 'MAXLEN', '~', 1000, '*', 'e', epoch,
    'to', target, 'l', line)
  redis.call('XTRIM', p .. 'ctl', 'MINID', '~', now - 60000)
  return {'ok', name}
end

-- The periodic TICK, by the node that holds the lease. The lease lasts
-- one period and its holder renews it with each tick. When the holder
-- dies, the lease runs out at most one period after its last TICK, and
-- another node's next tick (within one more period) takes it: a TICK
-- within two periods. A new holder's first TICK comes at least one
-- period after the old one's last (the lease had to run out): a period
-- may be skipped, never doubled.
-- A lease of 0 is the embedding program's notification: always sent.
function OPS.tick(lease_ms, rest)
  if not valid_text(rest) then return {'invalid'} end
  if tonumber(lease_ms) > 0 then
    local holder = redis.call('GET', p .. 'ticker')
    if holder and holder ~= node then return {'not-mine'} end
    redis.call('SET', p .. 'ticker', node, 'PX', lease_ms)
  end
  return {'ok', append('TICK', rest, '', '')}
end

-- A node's heartbeat, every second. It is also where dead nodes are
-- found: a node whose last beat is DEAD_AFTER ms older than this node's
-- own previous beat is removed, and each of its members leaves as
-- `node-down` (exactly once: this runs atomically, and removes them).
-- Measuring against the beater's own previous beat, not against the
-- clock, means that a pause of Redis itself (every node silent at once)
-- kills nobody. Answers the newest SEQ (for the reader's lag), or
-- 'reaped' if this node itself had been found dead.
function OPS.beat()
  local before = redis.call('HGET', p .. 'nodes', node)
  redis.call('HSET', p .. 'nodes', node, now)
  if not before then return {'reaped'} end
  local nodes = redis.call('HGETALL', p .. 'nodes')
  for i = 1, #nodes, 2 do
    if tonumber(before) - tonumber(nodes[i + 1]) > DEAD_AFTER then
      local dead = nodes[i]
      redis.call('HDEL', p .. 'nodes', dead)
      local home = redis.call('HGETALL', p .. 'home')
      for j = 1, #home, 2 do
        if home[j + 1] == dead then leave(home[j], 'node-down', true) end
      end
    end
  end
  return {'ok', tonumber(redis.call('GET', p .. 'seq') or '0')}
end

-- A node stops cleanly: it is no longer a node of the room, and lets go
-- of the tick lease.
function OPS.stop()
  redis.call('HDEL', p .. 'nodes', node)
  if redis.call('GET', p .. 'ticker') == node then
    redis.call('DEL', p .. 'ticker')
  end
  return {'ok'}
end

-- A block of `count` client ids: (first, last).
function OPS.ids(count)
  local last = redis.call('INCRBY', p .. 'ids', tonumber(count))
  return {'ok', last - tonumber(count) + 1, last}
end

local run = OPS[op]
if not run then return {'unknown-op'} end
if deadline > 0 and now > deadline then return {'late'} end
if op ~= 'start' and redis.call('GET', p .. 'epoch') ~= epoch then
  return {'epoch'}
end
return run(unpack(ARGV, 7))
