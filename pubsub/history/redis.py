"""History in Redis: cluster-wide without MongoDB, for deployments that already run Redis.

Each append and each read is one Lua script on two keys of the channel's hash
slot (``P`` is the prefix), so offsets are atomic across processes and the
store works on Redis Cluster:

    P:{a:c}:history_position    HASH epoch, last (the channel's newest offset)
    P:{a:c}:history             STREAM of entries, id ``<offset>-0``, fields e, d, t

The stream is capped at ``max_count`` by XADD MAXLEN and trimmed of expired
entries from its oldest end; it expires ``max_age`` after the last append and
the position :data:`~.base.POSITION_KEPT_FOR` later. A position that is gone
(flushed, expired) starts a new epoch, and the old epoch's stream with it.

The command client retries once on a fresh connection (see
:func:`~..redis.client.connect`): an append whose reply was lost with its
connection is then stored twice, under consecutive offsets. An append cut
by the command deadline (``RedisConfig.timeout``) raises
:class:`~..errors.HistoryUnavailable` at the deadline, but if its command had
reached a stalled Redis it is stored when Redis resumes, so a resume may
show an entry whose publish was answered 503.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any, Callable

import redis.asyncio as aioredis

from ..redis.client import UNREACHABLE, channel_key
from .base import POSITION_KEPT_FOR, Entry, HistoryStore, Page, Retention, reachable

# KEYS: position, stream. ARGV[1]: an epoch for a channel that has none,
# ARGV[2]: the oldest entry time kept, ARGV[3]: the position's TTL (ms).
_PRELUDE = """
local function position()
  if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
    redis.call('DEL', KEYS[2])  -- a new epoch: entries of a lost one must not show
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return redis.call('HGET', KEYS[1], 'epoch')
end
local function drop_expired()
  local cutoff = tonumber(ARGV[2])
  while true do
    local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
    if #head == 0 or tonumber(head[1][2][6]) >= cutoff then return end
    redis.call('XDEL', KEYS[2], head[1][1])
  end
end
"""

# ARGV[4..]: max_count, the stream's TTL (ms), event, data, time.
_APPEND = _PRELUDE + """
local epoch = position()
local offset = redis.call('HINCRBY', KEYS[1], 'last', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], offset .. '-0',
           'e', ARGV[6], 'd', ARGV[7], 't', ARGV[8])
drop_expired()
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {epoch, offset}
"""

# ARGV[4..]: max_count, after (exclusive, 0: none), before (exclusive, '': none),
# limit, 1 to take the entries nearest 'after' (else the newest).
_READ = _PRELUDE + """
local epoch = position()
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
drop_expired()
local first = last + 1
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #head > 0 then
  first = math.max(tonumber(string.match(head[1][1], '^%d+')), last - tonumber(ARGV[4]) + 1)
end
local low = math.max(first, tonumber(ARGV[5]) + 1)
local high = last
if ARGV[6] ~= '' then high = math.min(high, tonumber(ARGV[6]) - 1) end
local entries = {}
local limit = tonumber(ARGV[7])
if limit > 0 and low <= high then
  if ARGV[8] == '1' then
    entries = redis.call('XRANGE', KEYS[2], low .. '-0', high .. '-0', 'COUNT', limit)
  else
    entries = redis.call('XREVRANGE', KEYS[2], high .. '-0', low .. '-0', 'COUNT', limit)
  end
end
return {epoch, last, first, entries}
"""


class RedisHistoryStore(HistoryStore):
    """:class:`~.base.HistoryStore` in Redis (or Redis Cluster); closes ``client`` on close.

    ``clock`` gives unix seconds, the time entries' ages are measured at.
    """

    def __init__(self, client: aioredis.Redis | aioredis.RedisCluster, *, prefix: str = "push",
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._prefix = prefix
        self._clock = clock
        self._append = client.register_script(_APPEND)
        self._read = client.register_script(_READ)

    async def start(self) -> None:
        """Load the scripts: a burst of first calls would otherwise each meet NOSCRIPT
        and load them at once, which makes the Cluster client drop connections."""
        with reachable("Redis", UNREACHABLE):
            for script in (self._append, self._read):
                await self._redis.script_load(script.script)

    async def close(self) -> None:
        await self._redis.aclose()

    async def append(self, app_id: str, channel: str, event: str, data: str, *,
                     time: float, retention: Retention) -> tuple[str, Entry]:
        args = self._common_args(retention) + [
            retention.max_count, _milliseconds(retention.max_age), event, data, repr(time)]
        with reachable("Redis", UNREACHABLE):
            epoch, offset = await self._append(keys=self._keys(app_id, channel), args=args)
        return epoch.decode(), Entry(int(offset), event, data, time)

    async def read(self, app_id: str, channel: str, *, after: int | None = None,
                   before: int | None = None, limit: int = 100,
                   retention: Retention) -> Page:
        args = self._common_args(retention) + [
            retention.max_count, after or 0, "" if before is None else before, limit, 1 if after is not None else 0]
        with reachable("Redis", UNREACHABLE):
            epoch, last, first, raw = await self._read(keys=self._keys(app_id, channel), args=args)
        entries = sorted((_entry(item) for item in raw), key=lambda entry: entry.offset)
        return Page(epoch.decode(), tuple(entries), int(last), int(first))

    def _keys(self, app_id: str, channel: str) -> list[str]:
        return [channel_key(self._prefix, app_id, channel, suffix)
                for suffix in ("history_position", "history")]

    def _common_args(self, retention: Retention) -> list[Any]:
        """ARGV[1..3] of both scripts: an epoch in case, the age cutoff, the position's TTL."""
        return [secrets.token_hex(8), repr(self._clock() - retention.max_age),
                _milliseconds(retention.max_age + POSITION_KEPT_FOR)]


def _milliseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _entry(item: list[Any]) -> Entry:
    """A stream entry ``[b"<offset>-0", [b"e", event, b"d", data, b"t", time]]``."""
    stream_id, fields = item
    return Entry(int(stream_id.split(b"-")[0]), fields[1].decode(), fields[3].decode(),
                 float(fields[5]))
