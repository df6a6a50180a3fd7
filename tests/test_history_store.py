"""The history-store contract, held by the memory, Redis (single and Cluster) and Mongo stores.

Mongo runs twice, once with a motor client injected and once with PyMongo's
AsyncMongoClient, against a real MongoDB when MONGO_URL is set and nx-27017
otherwise (see tests/mongo_server.py). Age retention is tested with entry
times in the past, never by waiting.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Callable

import motor.motor_asyncio
import pymongo
import pytest
import redis.asyncio as aioredis

from redis_server import free_port
from tornado_push.pubsub.errors import HistoryUnavailable
from tornado_push.pubsub.history import HistoryStore, MemoryHistoryStore, Retention
from tornado_push.pubsub.history.base import POSITION_KEPT_FOR
from tornado_push.pubsub.history.memory import SWEEP_INTERVAL
from tornado_push.pubsub.history.mongo import MongoHistoryStore
from tornado_push.pubsub.history.redis import RedisHistoryStore
from tornado_push.embed import make_history_store
from tornado_push.settings import SettingsError, load_settings

KEEP = Retention()
MONGO_CLIENTS: dict[str, Callable[..., Any]] = {
    "motor": motor.motor_asyncio.AsyncIOMotorClient,
    "pymongo": pymongo.AsyncMongoClient,
}


class Backend:
    """Where a store keeps its history; it outlives the store objects made on it."""

    durable = True

    async def store(self) -> HistoryStore:
        """A new, started store object on this backend."""
        raise NotImplementedError

    async def lose_data(self, store: HistoryStore) -> HistoryStore:
        """Lose every channel's history; the store to go on with."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the backend opened (stores close themselves)."""


class MemoryBackend(Backend):
    durable = False  # the history lives and dies with the store object

    async def store(self) -> HistoryStore:
        return MemoryHistoryStore()

    async def lose_data(self, store: HistoryStore) -> HistoryStore:
        return await self.store()  # a restarted process


class RedisBackend(Backend):
    def __init__(self, connect: Callable[[], aioredis.Redis | aioredis.RedisCluster]) -> None:
        self._connect = connect
        self._admin = connect()

    async def store(self) -> HistoryStore:
        store = RedisHistoryStore(self._connect(), prefix="test")
        await store.start()
        return store

    async def lose_data(self, store: HistoryStore) -> HistoryStore:
        await self._admin.flushall()
        return store

    async def close(self) -> None:
        await self._admin.flushall()
        await self._admin.aclose()


class MongoBackend(Backend):
    def __init__(self, url: str, client_kind: str) -> None:
        self._client = MONGO_CLIENTS[client_kind](url)
        self._database = f"test_history_{uuid.uuid4().hex[:12]}"

    async def store(self) -> HistoryStore:
        store = MongoHistoryStore(client=self._client, database_name=self._database)
        await store.start()
        return store

    async def lose_data(self, store: HistoryStore) -> HistoryStore:
        await self._client.drop_database(self._database)
        return store

    async def close(self) -> None:
        await self._client.drop_database(self._database)
        closed = self._client.close()  # a coroutine for PyMongo, None for motor
        if closed is not None:
            await closed


@pytest.fixture(params=["memory", "redis", "redis-cluster", "mongo-motor", "mongo-pymongo"])
def backend(request, io_loop):
    kind = request.param
    if kind == "memory":
        made: Backend = MemoryBackend()
    elif kind == "redis":
        url = request.getfixturevalue("redis_server").url
        made = RedisBackend(lambda: aioredis.from_url(url))
    elif kind == "redis-cluster":
        url = request.getfixturevalue("redis_cluster").url
        made = RedisBackend(lambda: aioredis.RedisCluster.from_url(url))
    else:
        made = MongoBackend(request.getfixturevalue("mongo_server").url, kind.split("-")[1])
    yield made
    io_loop.run_sync(made.close)


@pytest.fixture
def store(io_loop, backend: Backend):
    made = io_loop.run_sync(backend.store)
    yield made
    io_loop.run_sync(made.close)


async def append_many(store: HistoryStore, count: int, *, channel: str = "news",
                      retention: Retention = KEEP, at: float | None = None) -> str:
    """Append ``count`` events ``e1, e2...``; the channel's epoch."""
    epoch = ""
    for number in range(1, count + 1):
        epoch, _ = await store.append("1", channel, f"e{number}", f'{{"n": {number}}}',
                                      time=time.time() if at is None else at, retention=retention)
    return epoch


def offsets(page) -> list[int]:
    return [entry.offset for entry in page.entries]


@pytest.mark.gen_test
async def test_offsets_count_from_one_in_order_and_entries_come_back_as_given(store):
    now = time.time()
    epoch, entry = await store.append("1", "news", "héadline", '{"title": "Grüße ✓"}',
                                      time=now, retention=KEEP)
    assert (entry.offset, entry.event, entry.data, entry.time) == (
        1, "héadline", '{"title": "Grüße ✓"}', now)
    assert await append_many(store, 4) == epoch
    page = await store.read("1", "news", retention=KEEP)
    assert page.epoch == epoch and epoch
    assert offsets(page) == [1, 2, 3, 4, 5]
    assert page.entries[0] == entry
    assert [e.event for e in page.entries[1:]] == ["e1", "e2", "e3", "e4"]
    assert (page.last_offset, page.first_offset) == (5, 1)


@pytest.mark.gen_test(timeout=30)
async def test_concurrent_appends_get_distinct_consecutive_offsets(store):
    results = await asyncio.gather(*(
        store.append("1", "busy", "e", str(number), time=time.time(), retention=KEEP)
        for number in range(50)))
    assert len({epoch for epoch, _ in results}) == 1
    assert sorted(entry.offset for _, entry in results) == list(range(1, 51))
    page = await store.read("1", "busy", retention=KEEP)
    assert offsets(page) == list(range(1, 51))
    assert sorted(int(entry.data) for entry in page.entries) == list(range(50))


@pytest.mark.gen_test
async def test_read_without_after_gives_the_newest_entries_in_ascending_order(store):
    await append_many(store, 10)
    assert offsets(await store.read("1", "news", limit=3, retention=KEEP)) == [8, 9, 10]
    assert offsets(await store.read("1", "news", before=6, limit=3, retention=KEEP)) == [3, 4, 5]


@pytest.mark.gen_test
async def test_read_after_gives_the_entries_nearest_to_it_to_resume_from(store):
    await append_many(store, 10)
    assert offsets(await store.read("1", "news", after=4, limit=3, retention=KEEP)) == [5, 6, 7]
    assert offsets(await store.read("1", "news", after=0, retention=KEEP)) == list(range(1, 11))
    assert offsets(await store.read("1", "news", after=10, retention=KEEP)) == []
    page = await store.read("1", "news", after=2, before=6, retention=KEEP)
    assert offsets(page) == [3, 4, 5]
    assert (page.last_offset, page.first_offset) == (10, 1)
    assert offsets(await store.read("1", "news", after=5, before=6, retention=KEEP)) == []


@pytest.mark.gen_test
async def test_a_new_channel_has_an_epoch_that_its_first_append_keeps(store):
    page = await store.position("1", "fresh", retention=KEEP)
    assert page.epoch and page.entries == ()
    assert (page.last_offset, page.first_offset) == (0, 1)
    epoch, entry = await store.append("1", "fresh", "e", "d", time=time.time(), retention=KEEP)
    assert (epoch, entry.offset) == (page.epoch, 1)
    position = await store.position("1", "fresh", retention=KEEP)
    assert (position.epoch, position.entries, position.last_offset, position.first_offset) == (
        epoch, (), 1, 1)


@pytest.mark.gen_test
async def test_count_retention_keeps_the_newest_and_moves_first_offset(store):
    three = Retention(max_count=3)
    await append_many(store, 7, retention=three)
    page = await store.read("1", "news", retention=three)
    assert offsets(page) == [5, 6, 7]
    assert (page.last_offset, page.first_offset) == (7, 5)
    assert offsets(await store.read("1", "news", after=1, limit=2, retention=three)) == [5, 6]


@pytest.mark.gen_test
async def test_age_retention_never_returns_expired_entries(store):
    hour = Retention(max_age=3600)
    now = time.time()
    for age in (7200, 5400, 1800, 60):  # offsets 1-2 are older than an hour
        await store.append("1", "news", "e", str(age), time=now - age, retention=hour)
    page = await store.read("1", "news", retention=hour)
    assert [entry.data for entry in page.entries] == ["1800", "60"]
    assert (page.last_offset, page.first_offset) == (4, 3)
    assert offsets(await store.read("1", "news", after=0, limit=1, retention=hour)) == [3]
    position = await store.position("1", "news", retention=hour)
    assert (position.last_offset, position.first_offset) == (4, 3)


@pytest.mark.gen_test
async def test_a_channel_whose_entries_all_expired_keeps_its_position(store):
    minute = Retention(max_age=60)
    epoch = await append_many(store, 3, retention=minute, at=time.time() - 120)
    page = await store.read("1", "news", retention=minute)
    assert (page.epoch, page.entries, page.last_offset, page.first_offset) == (epoch, (), 3, 4)
    again, entry = await store.append("1", "news", "e", "d", time=time.time(), retention=minute)
    assert (again, entry.offset) == (epoch, 4)


@pytest.mark.gen_test
async def test_channels_and_apps_have_separate_histories(store):
    await append_many(store, 3, channel="a")
    _, entry = await store.append("2", "a", "other-app", "d", time=time.time(), retention=KEEP)
    _, other = await store.append("1", "b", "other-channel", "d", time=time.time(), retention=KEEP)
    assert entry.offset == other.offset == 1
    assert offsets(await store.read("1", "a", retention=KEEP)) == [1, 2, 3]
    assert [e.event for e in (await store.read("2", "a", retention=KEEP)).entries] == ["other-app"]


@pytest.mark.gen_test
async def test_epoch_and_entries_survive_a_new_store_object_on_the_same_backend(backend, store):
    if not backend.durable:
        pytest.skip("a memory store's history lives and dies with the store object")
    epoch = await append_many(store, 3)
    again = await backend.store()
    try:
        page = await again.read("1", "news", retention=KEEP)
        assert (page.epoch, offsets(page)) == (epoch, [1, 2, 3])
        _, entry = await again.append("1", "news", "e", "d", time=time.time(), retention=KEEP)
        assert entry.offset == 4
    finally:
        await again.close()


@pytest.mark.gen_test
async def test_a_backend_that_lost_its_data_starts_a_new_epoch_from_offset_one(backend, store):
    epoch = await append_many(store, 3)
    after_loss = await backend.lose_data(store)
    try:
        position = await after_loss.position("1", "news", retention=KEEP)
        assert position.epoch != epoch
        assert (position.last_offset, position.first_offset) == (0, 1)
        new_epoch, entry = await after_loss.append("1", "news", "e", "d", time=time.time(),
                                                   retention=KEEP)
        assert (new_epoch, entry.offset) == (position.epoch, 1)
        assert offsets(await after_loss.read("1", "news", retention=KEEP)) == [1]
    finally:
        if after_loss is not store:  # the fixture closes its own
            await after_loss.close()


# -- each store's own guarantees ------------------------------------------------


@pytest.mark.gen_test
async def test_memory_forgets_channels_idle_past_their_retention():
    now = [1_000_000.0]
    store = MemoryHistoryStore(clock=lambda: now[0])
    minute = Retention(max_age=60)
    epoch, _ = await store.append("1", "idle", "e", "d", time=now[0], retention=minute)
    now[0] += 60 + POSITION_KEPT_FOR - 1
    assert (await store.position("1", "idle", retention=minute)).epoch == epoch  # still known
    now[0] += 60 + POSITION_KEPT_FOR + SWEEP_INTERVAL
    await store.position("1", "other", retention=minute)  # any use sweeps when due
    assert set(store._channels) == {("1", "other")}  # memory stays bounded
    page = await store.position("1", "idle", retention=minute)
    assert page.epoch != epoch and page.last_offset == 0


@pytest.mark.gen_test
async def test_mongo_store_makes_its_indexes_and_a_motor_client_from_a_url(mongo_server):
    database = f"test_history_{uuid.uuid4().hex[:12]}"
    store = MongoHistoryStore(mongo_server.url, database_name=database)
    admin = pymongo.AsyncMongoClient(mongo_server.url)
    try:
        await store.start()
        _, entry = await store.append("1", "news", "e", "d", time=time.time(), retention=KEEP)
        assert entry.offset == 1
        # By keys: nx-27017 names indexes itself, ignoring the names given.
        indexes = {tuple(name for name, _ in index["key"]): index for index in
                   (await admin[database]["history_entries"].index_information()).values()}
        assert indexes[("app", "channel", "epoch", "offset")]["unique"] is True
        assert indexes[("expire_at",)]["expireAfterSeconds"] == 0
        [stored] = await admin[database]["history_entries"].find().to_list(None)
        assert stored["expire_at"].timestamp() == pytest.approx(entry.time + KEEP.max_age, abs=0.01)
    finally:
        await store.close()
        await admin.drop_database(database)
        await admin.close()


@pytest.mark.gen_test(timeout=15)
async def test_redis_store_raises_history_unavailable_when_redis_is_down(fresh_redis):
    store = RedisHistoryStore(aioredis.from_url(fresh_redis.url, socket_timeout=1))
    await store.start()
    fresh_redis.stop()
    try:
        with pytest.raises(HistoryUnavailable, match="Redis is unreachable"):
            await store.append("1", "news", "e", "d", time=time.time(), retention=KEEP)
    finally:
        await store.close()


@pytest.mark.gen_test(timeout=15)
async def test_mongo_store_raises_history_unavailable_when_mongodb_is_unreachable():
    client = pymongo.AsyncMongoClient(f"mongodb://127.0.0.1:{free_port()}/",
                                      serverSelectionTimeoutMS=300)
    store = MongoHistoryStore(client=client)
    try:
        with pytest.raises(HistoryUnavailable, match="MongoDB is unreachable"):
            await store.start()
        with pytest.raises(HistoryUnavailable, match="MongoDB is unreachable"):
            await store.read("1", "news", retention=KEEP)
    finally:
        await client.close()


# -- which store a deployment gets ----------------------------------------------


@pytest.mark.parametrize("environ, kind", [
    ({}, MemoryHistoryStore),
    ({"PUSH_REDIS_URL": "redis://127.0.0.1:6379"}, RedisHistoryStore),
    ({"PUSH_MONGO_URL": "mongodb://127.0.0.1:27017"}, MongoHistoryStore),
    ({"PUSH_MONGO_URL": "mongodb://127.0.0.1:27017",
      "PUSH_REDIS_URL": "redis://127.0.0.1:6379"}, MongoHistoryStore),
])
def test_mongo_wins_over_redis_which_wins_over_memory(io_loop, environ, kind):
    store = make_history_store(load_settings(environ))
    assert type(store) is kind
    io_loop.run_sync(store.close)


def test_mongo_settings_are_read_and_checked():
    settings = load_settings({"PUSH_MONGO_URL": "mongodb://u:p%40ss@db.example:27017/?tls=true",
                              "PUSH_MONGO_DATABASE": "push_history"})
    assert settings.mongo_database == "push_history"
    assert "p%40ss" not in repr(settings)
    assert load_settings({}).mongo_url is None
    with pytest.raises(SettingsError, match="PUSH_MONGO_URL must start with mongodb://"):
        load_settings({"PUSH_MONGO_URL": "http://db.example"})
    with pytest.raises(SettingsError, match="PUSH_MONGO_DATABASE 'a.b'"):
        load_settings({"PUSH_MONGO_DATABASE": "a.b"})
