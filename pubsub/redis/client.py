"""Redis connections and key names, shared by the broker and the cluster state.

Key names live here so that every module computes the same name for the same
channel. Everything is hash-tagged per app and channel: Redis Cluster hashes
only the part of a key inside the first ``{...}``, so a channel's pub/sub name
and all of its state keys land in one slot. That makes multi-key commands and
scripts on one channel legal in a cluster, and puts a channel's sharded pub/sub
traffic (SSUBSCRIBE/SPUBLISH) on the shard that holds its state, while
different channels still spread over the shards.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator
from urllib.parse import unquote, urlsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from ..timing import Buckets

#: What redis-py raises when Redis cannot be reached or does not answer in time.
UNREACHABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # includes AuthenticationError
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,  # e.g. CLUSTERDOWN
    redis.exceptions.RedisClusterException,  # e.g. a slot no node covers
    OSError,
)


def describe(error: BaseException) -> str:
    """An error for a log line or a 503 message: its kind, and its text when it has one."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


#: Command connections per process: enough to keep Redis busy, few enough to share it.
COMMAND_CONNECTIONS = 32


@dataclass(frozen=True)
class RedisConfig:
    """Where Redis is and how this deployment uses it.

    ``url`` (``redis://`` or ``rediss://``, credentials percent-encoded as in
    any URL) gives host, port, db, credentials and TLS at once; the separate
    fields are used only without it, and take the password as it is.
    """

    # Neither the URL nor the password shows in a repr, so logging a config leaks nothing.
    url: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    #: Redis Cluster: sharded pub/sub for channels, no db other than 0.
    cluster: bool = False
    #: Start of every key and pub/sub name, so deployments can share one Redis.
    prefix: str = "push"
    #: Seconds between node heartbeats; a node silent for two intervals is dead.
    heartbeat_interval: float = 15.0
    #: Seconds one command may take in all (waiting for a pooled connection,
    #: connecting, one retry); past it the command fails as if Redis were down.
    timeout: float = 3.0


def parse_url(url: str) -> dict[str, Any]:
    """Host, port, db, username, password and tls of a ``redis[s]://`` URL.

    Raises ValueError saying what is wrong; an unencoded ``#``, ``/``, ``?``
    or ``@`` in a password is the usual cause, so the message says how to
    write it.
    """
    hint = " (percent-encode special characters in the password, e.g. # as %23)"
    # urllib's own messages are not repeated: they may quote part of the password.
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(f"is not a valid URL{hint}") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"scheme must be redis:// or rediss://, got {parts.scheme or 'none'!r}")
    try:
        port = 6379 if parts.port is None else parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"must have a port from 1 to 65535{hint}")
    if not parts.hostname:
        raise ValueError(f"has no host{hint}")
    if parts.query or parts.fragment:
        raise ValueError(f"must not have a query or fragment{hint}")
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise ValueError(f"path must be a database number like /0{hint}")
    return {
        "host": parts.hostname,
        "port": port,
        "db": int(path),
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password is not None else None,
        "tls": parts.scheme == "rediss",
    }


#: Seconds of this process's Redis commands, by operation (the command's name, lowercase,
#: or ``script``), each as a whole: retry and NOSCRIPT reload included, failures too.
#: Process-wide, like the connections' event loop; metrics read it at scrape time.
COMMAND_SECONDS: dict[str, Buckets] = {}

#: Set while a task is inside a :func:`deadline`: an inner one then adds nothing.
_under_deadline: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "redis_under_deadline", default=False)


@contextlib.asynccontextmanager
async def deadline(seconds: float, what: str, op: str | None = None) -> AsyncIterator[None]:
    """Cancel the block and raise redis-py's ``TimeoutError`` (one of :data:`UNREACHABLE`)
    unless it is done within ``seconds``.

    This is the one deadline of every Redis command: redis-py's own
    ``socket_timeout`` bounds each socket read alone, so a stalled Redis
    could hold a command for the pool wait, the read, the retry's connect
    handshake (one read per handshake command) and the retry's read, one
    timeout each (16-20 s measured with 5 s). Inside another deadline of the
    same task only the outer one counts, so that a script call and the
    NOSCRIPT reload it may make are one command. A cancelled redis-py read
    or write disconnects its connection, so no half-answered connection goes
    back to the pool. With ``op``, the block's seconds go to :data:`COMMAND_SECONDS`.
    """
    if _under_deadline.get():
        yield
        return
    token = _under_deadline.set(True)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:  # asyncio's, or a socket's: either way no answer in time
        raise redis.exceptions.TimeoutError(f"no {what} from Redis within {seconds:g} s") from None
    finally:
        _under_deadline.reset(token)
        if op is not None:
            _command_seconds(op).observe(time.perf_counter() - started)


def _command_seconds(op: str) -> Buckets:
    buckets = COMMAND_SECONDS.get(op)
    if buckets is None:
        buckets = COMMAND_SECONDS[op] = Buckets()
    return buckets


class _Deadlined:
    """A redis-py client whose every command and script call ends within ``command_timeout``.

    Every command of a redis-py client goes through ``execute_command`` and
    every script call through ``register_script``'s script, so these two are
    the whole surface.
    """

    def __init__(self, *args: Any, command_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command_timeout = command_timeout

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        async with deadline(self.command_timeout, f"answer to {name}", name.lower()):
            return await super().execute_command(*args, **options)  # type: ignore[misc]

    def register_script(self, script: str | bytes) -> AsyncScript:
        return _DeadlinedScript(self, script)


class _DeadlinedScript(AsyncScript):
    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        client = client or self.registered_client
        keys, args = list(keys or ()), list(args or ())
        async with deadline(self.registered_client.command_timeout, "answer to a script", "script"):
            try:
                return await client.evalsha(self.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                # EVAL runs it on its keys' node and caches it there. redis-py's SCRIPT
                # LOAD goes to every master of a cluster: one master down would stop
                # every script a node had not run yet, on the masters that are up too.
                return await client.eval(self.script, len(keys), *keys, *args)


class DeadlinedRedis(_Deadlined, redis.asyncio.Redis):
    """``redis.asyncio.Redis`` whose commands end within ``command_timeout`` seconds."""


class DeadlinedRedisCluster(_Deadlined, redis.asyncio.RedisCluster):
    """``redis.asyncio.RedisCluster`` whose commands end within ``command_timeout`` seconds."""


def connect(config: RedisConfig) -> DeadlinedRedis | DeadlinedRedisCluster:
    """The client for commands (PUBLISH, state, history); connections open on first use.

    Each command, its retry included, fails with redis-py's ``TimeoutError``
    after ``config.timeout`` (see :func:`deadline`). One immediate retry on a
    fresh connection covers a pooled connection that died with a Redis
    restart; anything longer is an outage, which callers report at once
    rather than hold a request through a retry schedule.
    """
    retry = Retry(NoBackoff(), 1)
    options = _options(config, health_check_interval=config.heartbeat_interval)
    if config.cluster:
        options.pop("db")
        return DeadlinedRedisCluster(retry=retry, command_timeout=config.timeout, **options)
    # A burst of subscribes must queue for a connection, not fail with "Too many
    # connections" as redis-py's default pool (100, non-blocking) would.
    tls = options.pop("ssl")
    pool = redis.asyncio.BlockingConnectionPool(
        max_connections=COMMAND_CONNECTIONS, timeout=config.timeout, retry=retry,
        connection_class=redis.asyncio.SSLConnection if tls else redis.asyncio.Connection,
        **options)
    return DeadlinedRedis(connection_pool=pool, command_timeout=config.timeout)


def connect_subscriber(config: RedisConfig, host: str | None = None,
                       port: int | None = None) -> redis.asyncio.Redis:
    """A client for subscriber connections, to ``host:port`` (a cluster node) if given.

    redis-py would otherwise reconnect and resubscribe behind our back and
    hide the gap; with no library retries and no library health checks every
    failure reaches the subscriber, which reconnects, heartbeats and tells
    its listeners itself.
    """
    options = _options(config, health_check_interval=0)
    if host is not None:
        options.update(host=host, port=port, db=0)
    return redis.asyncio.Redis(retry=Retry(NoBackoff(), 0, supported_errors=()), **options)


def channel_key(prefix: str, app_id: str, channel: str, suffix: str) -> str:
    """A key (or pub/sub name) of one channel, hash-tagged to the channel's slot."""
    return f"{prefix}:{{{app_id}:{channel}}}:{suffix}"


def pubsub_channel(prefix: str, app_id: str, channel: str) -> str:
    """The Redis pub/sub name that carries a channel's publications."""
    return channel_key(prefix, app_id, channel, "pub")


def control_channel(prefix: str) -> str:
    """The Redis pub/sub name of control messages, which every process receives."""
    return f"{prefix}:control"


def _options(config: RedisConfig, *, health_check_interval: float) -> dict[str, Any]:
    where = parse_url(config.url) if config.url else {
        "host": config.host, "port": config.port, "db": config.db,
        "username": config.username, "password": config.password, "tls": config.tls,
    }
    return {
        "host": where["host"],
        "port": where["port"],
        "db": where["db"],
        "username": where["username"],
        "password": where["password"],
        "ssl": where["tls"],
        "decode_responses": False,
        # Inner bounds only: the deadline of a whole command is :func:`deadline`'s.
        "socket_timeout": config.timeout,
        "socket_connect_timeout": config.timeout,
        "health_check_interval": health_check_interval,
    }
