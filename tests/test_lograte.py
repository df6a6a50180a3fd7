"""Log lines rate-limited per kind (pubsub/lograte.py): no client can flood the log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from redis_server import free_port
from server_processes import ServerProcess
from tornado_push.pubsub import lograte
from tornado_push.pubsub.lograte import RateLimitFilter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Collected(logging.Handler):
    """Every record it emits, formatted."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def limited():
    """A logger whose handler keeps 3 records of a kind per 10 s, on a manual clock."""
    clock, handler = Clock(), Collected()
    handler.addFilter(RateLimitFilter(handler, burst=3, interval=10, clock=clock))
    logger = logging.getLogger("test_lograte.limited")
    logger.propagate = False
    logger.addHandler(handler)
    yield logger, handler, clock
    logger.removeHandler(handler)


def _lines_kept(handler: Collected, name: str, count: int) -> int:
    """How many of ``count`` lines of one kind logged on ``name`` reach ``handler``."""
    logger = logging.getLogger(name)
    logger.propagate, level = False, logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        for number in range(count):
            logger.info("%d %s %.2fms", 200, "POST /apps/1/events", number)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(level)
    return len(handler.lines)


def test_the_access_log_keeps_one_line_per_request(limited):
    assert _lines_kept(limited[1], "tornado.access", 50) == 50


def test_admin_actions_are_all_audited_but_admin_refusals_are_limited(limited):
    """Only a holder of the admin password makes audit lines; anyone makes refusals."""
    _, handler, _ = limited
    assert _lines_kept(handler, "tornado_push.admin.audit", 50) == 50
    handler.lines.clear()
    assert _lines_kept(handler, "tornado_push.admin.refusals", 50) == 3


def test_a_flood_of_one_kind_passes_a_burst_then_one_summary(limited):
    logger, handler, clock = limited
    for number in range(1000):
        logger.warning("refused %d: bad signature", number)
    assert handler.lines == ["refused 0: bad signature", "refused 1: bad signature",
                             "refused 2: bad signature"]
    clock.now += 10
    logger.warning("refused %d: bad signature", 1000)
    assert handler.lines[3:] == [
        "997 similar messages suppressed (more than 3 in 10 s): refused %d: bad signature",
        "refused 1000: bad signature"]


def test_kinds_are_counted_apart_by_template_and_level(limited):
    logger, handler, _ = limited
    for number in range(10):
        logger.warning("a %d", number)
        logger.warning("b %d", number)
        logger.error("a %d", number)
    assert len(handler.lines) == 9


def test_the_kinds_remembered_are_bounded(limited, monkeypatch):
    logger, handler, clock = limited
    monkeypatch.setattr(lograte, "MAX_KINDS", 50)
    for number in range(500):  # f-strings make a new kind each time
        logger.warning(f"kind {number}")
    assert len(handler.lines) == 500  # each its first of a kind
    assert len(handler.filters[0]._windows) <= 50


def test_limit_installs_one_filter_per_target():
    handlers = [Collected(), Collected()]
    lograte.limit(handlers, burst=1)
    assert [type(f) for h in handlers for f in h.filters] == [RateLimitFilter] * 2
    assert handlers[0].filters[0].target is handlers[0]


@pytest.mark.gen_test(timeout=60)
async def test_a_flood_of_bad_requests_logs_a_bounded_number_of_lines():
    """300 unsigned publishes to ``python server.py``: each was an access line and a
    'refused' line; a few refusals are kept, and every access line."""
    server = await ServerProcess(free_port(), {"PUSH_LOG_LEVEL": "INFO"}).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        request = (b"POST /apps/1/events?auth_key=app-key HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Length: 2\r\n\r\n{}")
        for _ in range(300):
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 401")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.close()
    finally:
        exit_code = await server.terminate()  # every line it logged is read once it exited
    assert exit_code == 0, server.log
    refused = [line for line in server.lines if "refused" in line]
    access = [line for line in server.lines if "401 POST" in line]
    assert 0 < len(refused) <= lograte.BURST and len(access) == 300, server.log
