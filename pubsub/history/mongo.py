"""History in MongoDB: durable, cluster-wide, and shareable with a host app's database.

Written against the async collection API that motor and PyMongo's
``AsyncMongoClient`` share, so a host app injects whichever client (or
database) it already has; given only a URL, the store makes a motor client.

Collections:
    history_positions   {_id: "<app>:<channel>", epoch, last}: the offset counter.
                        It is made by insert_one (a duplicate _id loses the
                        race) and advanced by find_one_and_update with $inc, not
                        by an upsert with $setOnInsert, which nx-27017 ignores.
                        It is kept as long as the database: deleting it starts
                        a new epoch.
    history_entries     {app, channel, epoch, offset, event, data, time, expire_at}
                        unique on (app, channel, epoch, offset), so a new epoch
                        never collides with the leftovers of a lost one; a TTL
                        index on expire_at (time + max_age) removes old entries,
                        and reads skip expired ones before the TTL monitor runs.

An append is two writes: the counter, then the entry (three once the channel
holds ``max_count``: older offsets are deleted). A read that races an append
may see the new ``last_offset`` before its entry, and an append that fails
between the two writes leaves its offset without an entry (a gap in reads).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Callable

import motor.motor_asyncio
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from .base import Entry, HistoryStore, Page, Retention, reachable

DEFAULT_DATABASE = "tornado_push"
#: How long to wait for a server before a call raises HistoryUnavailable.
SERVER_TIMEOUT_MS = 5000
_ENTRY_FIELDS = {"_id": 0, "offset": 1, "event": 1, "data": 1, "time": 1}


class MongoHistoryStore(HistoryStore):
    """:class:`~.base.HistoryStore` in MongoDB.

    Give one of ``url`` (the store makes and closes a motor client),
    ``client`` (motor or PyMongo async; ``database_name`` in it) or
    ``database``; injected clients are left open for their owner.
    ``clock`` gives unix seconds, the time entries' ages are measured at.
    """

    def __init__(self, url: str | None = None, *, client: Any = None, database: Any = None,
                 database_name: str = DEFAULT_DATABASE,
                 clock: Callable[[], float] = time.time) -> None:
        if sum(given is not None for given in (url, client, database)) != 1:
            raise ValueError("give exactly one of url, client or database")
        self._owned = None
        if url is not None:
            client = self._owned = motor.motor_asyncio.AsyncIOMotorClient(
                url, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS, tz_aware=True)
        if database is None:
            database = client[database_name]
        self._positions = database["history_positions"]
        self._entries = database["history_entries"]
        self._clock = clock

    async def start(self) -> None:
        with reachable("MongoDB", (ConnectionFailure,)):
            await self._entries.create_index(
                [("app", ASCENDING), ("channel", ASCENDING), ("epoch", ASCENDING),
                 ("offset", ASCENDING)], unique=True, name="channel_offset")
            await self._entries.create_index("expire_at", expireAfterSeconds=0, name="expiry")

    async def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

    async def append(self, app_id: str, channel: str, event: str, data: str, *,
                     time: float, retention: Retention) -> tuple[str, Entry]:
        key = _key(app_id, channel)
        with reachable("MongoDB", (ConnectionFailure,)):
            position = await self._advance(key)
            if position is None:
                await self._create_position(key)
                position = await self._advance(key)
            epoch, offset = position["epoch"], position["last"]
            where = {"app": app_id, "channel": channel, "epoch": epoch}
            await self._entries.insert_one({
                **where, "offset": offset, "event": event, "data": data, "time": time,
                "expire_at": datetime.fromtimestamp(time + retention.max_age, timezone.utc)})
            if offset > retention.max_count:
                await self._entries.delete_many(
                    {**where, "offset": {"$lte": offset - retention.max_count}})
        return epoch, Entry(offset, event, data, time)

    async def read(self, app_id: str, channel: str, *, after: int | None = None,
                   before: int | None = None, limit: int = 100,
                   retention: Retention) -> Page:
        key = _key(app_id, channel)
        with reachable("MongoDB", (ConnectionFailure,)):
            position = await self._positions.find_one({"_id": key})
            if position is None:
                await self._create_position(key)
                position = await self._positions.find_one({"_id": key})
            epoch, last = position["epoch"], position["last"]
            retained = {"app": app_id, "channel": channel, "epoch": epoch,
                        "time": {"$gte": self._clock() - retention.max_age}}
            floor = max(last - retention.max_count, 0)
            oldest = await self._entries.find_one(
                {**retained, "offset": {"$gt": floor}}, _ENTRY_FIELDS, sort=[("offset", ASCENDING)])
            low = max(floor, after or 0)
            high = last + 1 if before is None else before
            entries: list[Entry] = []
            if limit > 0 and oldest is not None and low + 1 < high:
                order = ASCENDING if after is not None else DESCENDING
                cursor = self._entries.find({**retained, "offset": {"$gt": low, "$lt": high}},
                                            _ENTRY_FIELDS).sort("offset", order).limit(limit)
                entries = sorted([Entry(**doc) async for doc in cursor],
                                 key=lambda entry: entry.offset)
        first = oldest["offset"] if oldest is not None else last + 1
        return Page(epoch, tuple(entries), last, first)

    async def _advance(self, key: str) -> dict[str, Any] | None:
        """Take the channel's next offset; None when the channel has no position yet."""
        return await self._positions.find_one_and_update(
            {"_id": key}, {"$inc": {"last": 1}}, return_document=ReturnDocument.AFTER)

    async def _create_position(self, key: str) -> None:
        """A new epoch at offset 0, unless another process just made one."""
        with contextlib.suppress(DuplicateKeyError):
            await self._positions.insert_one({"_id": key, "epoch": secrets.token_hex(8), "last": 0})


def _key(app_id: str, channel: str) -> str:
    """App ids are digits, so the first ':' separates app and channel unambiguously."""
    return f"{app_id}:{channel}"
