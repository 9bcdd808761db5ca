"""Redis goes away and comes back under replicas sharing routing state (routing/shared.py).

On a private `redis-server` the test kills and starts again on the same port: requests never wait
on Redis (they keep succeeding, fast), the outage is logged once, what a replica learns meanwhile
reaches the others when Redis is back, and a gateway started while Redis is down serves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.routing import shared as shared_module
from tests.redis_server import PrivateRedis, private_redis
from tests.test_replicas import LABEL, Recorder, fail, live, replica, run, until


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path) as running:
        yield running


@pytest.fixture(autouse=True)
def _short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # The production backoff grows to 5 s; capped at 0.4 s so a recovery is seen in a fraction of that.
    monkeypatch.setattr(shared_module._Backoff, "FIRST", 0.1)
    monkeypatch.setattr(shared_module._Backoff, "MAX", 0.4)


def test_replicas_ride_out_an_outage_and_resume(server: PrivateRedis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sluice")

    async def test() -> None:
        a, b = live(), live()
        sa, sb = replica(a, "sluice:", server.url), replica(b, "sluice:", server.url)
        await sa.start()
        await sb.start()
        try:
            assert sa.status() == sb.status() == "ok"
            fail(a, "before/outage")
            await until(lambda: b.health.cooling("before/outage") is not None, 1.0, "no sharing before the outage")

            server.stop()
            await until(lambda: sa.status() == sb.status() == "unavailable", 5.0, "the outage was not noticed")
            # Learned during the outage: kept (bounded) and sent when Redis is back.
            fail(a, LABEL)
            a.affinity.changes.append(("kduring", LABEL, time.time() + 300, 0))
            a.metrics.record(LABEL, ok=True, latency=0.1, ttft=0.05, output_tokens=5)
            await asyncio.sleep(1.0)  # several failing ticks of every loop
            assert b.health.cooling(LABEL) is None
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "redis unavailable" in r.message]
            assert len(warnings) == 2, [r.message for r in warnings]  # one per replica, not one per tick
            assert a.health.changes == [] and a.affinity.changes == []  # drained: nothing piles up there

            received = Recorder(b.affinity)
            server.start()
            took = await until(lambda: b.health.cooling(LABEL) is not None, 5.0,
                               "the cooldown opened during the outage never reached the other replica")
            await until(lambda: received.calls, 2.0, "the affinity learned during the outage never arrived")
            assert sa.status() == sb.status() == "ok"
            assert any("redis answers again" in r.message for r in caplog.records)
            # And sharing goes on as before.
            fail(a, "after/outage")
            await until(lambda: b.health.cooling("after/outage") is not None, 1.0, "no sharing after the outage")
            assert took < 5.0
        finally:
            await sa.stop()
            await sb.stop()

    run(test)


def test_a_replica_started_while_redis_is_down_catches_up(server: PrivateRedis,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sluice")

    async def test() -> None:
        a, b = live(), live()
        sa = replica(a, "sluice:", server.url)
        await sa.start()
        server.stop()
        sb = replica(b, "sluice:", server.url)
        started = time.monotonic()
        await sb.start()  # refused at once: no wait for the sake of Redis
        try:
            assert time.monotonic() - started < 0.5
            assert sb.status() == "unavailable"
            assert any("redis unavailable" in r.message for r in caplog.records)
            server.start()
            fail(a, LABEL)
            await until(lambda: b.health.cooling(LABEL) is not None, 5.0, "B never joined once Redis came up")
        finally:
            await sa.stop()
            await sb.stop()

    run(test)


def test_stop_is_quick_with_redis_down(server: PrivateRedis) -> None:
    async def test() -> None:
        a = live()
        sa = replica(a, "sluice:", server.url)
        await sa.start()
        server.stop()
        fail(a, LABEL)
        await until(lambda: sa.status() == "unavailable", 5.0, "the outage was not noticed")
        started = time.monotonic()
        await sa.stop()
        assert time.monotonic() - started < 1.0

    run(test)
