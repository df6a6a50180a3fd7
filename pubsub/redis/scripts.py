"""The Lua scripts of the Redis cluster state's transitions (:mod:`.state`).

Each runs on keys of one hash slot, so Redis carries it out whole, one at a time:
exactly one process sees a channel's first subscriber or a user's last connection.
"""

# KEYS: subs, members, conns, member_of, pub (see RedisState._channel_keys).
# ARGV: socket, node, user ('' off presence), user_info JSON, PUBLISH or SPUBLISH,
#       the member_added publication ('' to add silently).
JOIN = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return {0, 0} end
local occupied = redis.call('HLEN', KEYS[1]) == 1 and 1 or 0
local added = 0
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
  if redis.call('HINCRBY', KEYS[3], ARGV[3], 1) == 1 then
    redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
    added = 1
    if ARGV[6] ~= '' then redis.call(ARGV[5], KEYS[5], ARGV[6]) end
  end
end
return {occupied, added}
"""

# KEYS as JOIN. ARGV: socket, PUBLISH or SPUBLISH, the member_removed event name,
# '1' for a call made again (ClusterState.leave) else '', the presence user known to
# the caller ('' if none). The publication is built here, where the user is known, in
# the broker's wire format ([event, data, exclude, user_id]) with data as
# presence.member_removed makes it; cjson may escape differently ("/" as "\/"), which
# JSON readers ignore.
LEAVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  if ARGV[4] == '' then return {0, ''} end
  local gone = ARGV[5]
  if gone ~= '' and redis.call('HEXISTS', KEYS[3], gone) == 1 then gone = '' end
  return {redis.call('HLEN', KEYS[1]) == 0 and 1 or 0, gone}
end
local vacated = redis.call('HLEN', KEYS[1]) == 0 and 1 or 0
local user = redis.call('HGET', KEYS[4], ARGV[1])
if not user then return {vacated, ''} end
redis.call('HDEL', KEYS[4], ARGV[1])
if redis.call('HINCRBY', KEYS[3], user, -1) > 0 then return {vacated, ''} end
redis.call('HDEL', KEYS[3], user)
redis.call('HDEL', KEYS[2], user)
local data = cjson.encode({user_id = user})
redis.call(ARGV[2], KEYS[5], cjson.encode({ARGV[3], data, cjson.null, cjson.null}))
return {vacated, user}
"""

SIGN_IN = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
return redis.call('HLEN', KEYS[1]) == 1 and 1 or 0
"""

# ARGV: socket, '1' for a call made again (ClusterState.sign_out) else ''.
SIGN_OUT = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 and ARGV[2] == '' then return 0 end
return redis.call('HLEN', KEYS[1]) == 0 and 1 or 0
"""

# Raise the node counter to at least ARGV[1]: after Redis lost its data, new
# processes must not be handed the ids of live ones.
RAISE_SEQ = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"""

# Redis's TIME on the node of KEYS[1] (the key the caller writes next).
CLOCK = "return redis.call('TIME')"
