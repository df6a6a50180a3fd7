"""StateWrites: cluster-state writes paced, retried until Redis answers, given up on close."""

from __future__ import annotations

import asyncio

import pytest

from tornado_push.pubsub.errors import BrokerUnavailable
from tornado_push.pubsub.writes import StateWrites

FAST = (0.01, 0.02)


@pytest.mark.gen_test(timeout=10)
async def test_a_write_is_retried_until_redis_answers_and_few_run_at_once():
    writes = StateWrites(at_once=2, retry=FAST)
    running, most, attempts, told_again = 0, 0, {}, {}

    async def write(number: int, again: bool) -> int:
        nonlocal running, most
        attempts[number] = attempts.get(number, 0) + 1
        told_again.setdefault(number, []).append(again)
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        if attempts[number] < 3:
            raise BrokerUnavailable("Redis is unreachable")
        return number

    results = await asyncio.gather(*(writes.run(lambda again, n=n: write(n, again))
                                     for n in range(6)))
    assert results == list(range(6))
    assert attempts == {n: 3 for n in range(6)} and most == 2
    # Each write is told when it runs again (Redis may have carried out an unanswered one).
    assert told_again == {n: [False, True, True] for n in range(6)}


@pytest.mark.gen_test(timeout=10)
async def test_after_close_nothing_is_retried_and_waiting_writes_give_up_untried():
    writes = StateWrites(at_once=1, retry=(60, 60))  # a backoff only close can cut short
    tried = []

    async def unreachable(number: int) -> None:
        tried.append(number)
        await asyncio.sleep(0.05)
        raise BrokerUnavailable("Redis is unreachable")

    first = asyncio.ensure_future(writes.run(lambda again: unreachable(1)))
    await asyncio.sleep(0.2)  # failed once, now backing off
    writes.close()
    with pytest.raises(BrokerUnavailable):
        await asyncio.wait_for(first, 1)  # the backoff ended: one more try, no retry
    later = [asyncio.ensure_future(writes.run(lambda again, n=n: unreachable(n))) for n in (2, 3)]
    outcomes = await asyncio.gather(*later, return_exceptions=True)
    assert all(isinstance(outcome, BrokerUnavailable) for outcome in outcomes)
    assert tried == [1, 1]  # the writes after the failure at close were not tried
