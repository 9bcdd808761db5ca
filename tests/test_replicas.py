"""Replicas sharing routing state through Redis (routing/shared.py, docs/routing.md "Several replicas").

In one event loop, two `LiveRouting`s with a `SharedRouting` each against the shared Redis
(127.0.0.1:6379, keys under a prefix of the test's own): cooldowns and cache affinities cross over
within a second, a replica that starts later loads what is current, metric deltas add up. Then
two real `sluice serve` processes sharing Redis agree on cooldowns, cache affinity and metrics.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis

from sluice.config import CooldownConfig, RoutingConfig
from sluice.errors import UpstreamError
from sluice.routing.live import LiveRouting
from sluice.routing.metrics import RouteMetrics
from sluice.routing.shared import SharedRouting
from tests.redis_server import SHARED_URL, delete_prefix, shared_redis_or_skip, unique_prefix

LABEL = "route-a/model-1"


@pytest.fixture
def shared_redis() -> Iterator[tuple[redis.Redis, str]]:
    """The shared server and a key prefix of this test's own (its keys are deleted after)."""
    client = shared_redis_or_skip()
    prefix = unique_prefix()
    try:
        yield client, prefix
    finally:
        delete_prefix(client, prefix)
        client.close()


def live() -> LiveRouting:
    return LiveRouting(RoutingConfig(cooldown=CooldownConfig(failures=2)))


def replica(state: LiveRouting, prefix: str, url: str = SHARED_URL) -> SharedRouting:
    # Faster than the defaults, so the tests take a fraction of a second per sync.
    return SharedRouting(state, url, prefix=prefix, tick=0.02, push_every=0.1, pull_every=0.1, hours_every=0.3)


async def until(check: Callable[[], Any], timeout: float, what: str) -> float:
    """Poll `check` until it is truthy; how long that took. Fails after `timeout` seconds."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, what
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def fail(state: LiveRouting, label: str) -> None:
    """Failures enough to open the route's cooldown (config `failures: 2`)."""
    for _ in range(2):
        state.health.failure(label, UpstreamError("boom", provider=label.split("/")[0], retryable=True, status=500))


class Recorder:
    """Wraps an `apply_remote`: what the replica received from the others."""

    def __init__(self, target: Any) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._apply = target.apply_remote
        target.apply_remote = self

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)
        self._apply(*args)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


# --- in one process ------------------------------------------------------------------------------

def test_a_cooldown_reaches_the_other_replica_within_a_second(shared_redis: tuple[redis.Redis, str]) -> None:
    _, prefix = shared_redis

    async def test() -> None:
        a, b = live(), live()
        sa, sb = replica(a, prefix), replica(b, prefix)
        await sa.start()
        await sb.start()
        own = Recorder(a.health)
        try:
            assert b.health.cooling(LABEL) is None
            fail(a, LABEL)
            assert a.health.cooling(LABEL) is not None
            # `cooling` only looks while a cooldown runs (it claims the half-open probe after it).
            took = await until(lambda: b.health.cooling(LABEL) is not None, 1.0,
                               "the cooldown did not reach the other replica within a second")
            reason, left = b.health.cooling(LABEL)
            assert reason == "failing" and 25 < left <= 30  # the default first cooldown: 30 s
            assert took < 1.0
            assert own.calls == []  # a replica ignores its own messages
        finally:
            await sa.stop()
            await sb.stop()

    run(test)


def test_an_affinity_reaches_the_other_replica(shared_redis: tuple[redis.Redis, str]) -> None:
    _, prefix = shared_redis

    async def test() -> None:
        a, b = live(), live()
        sa, sb = replica(a, prefix), replica(b, prefix)
        await sa.start()
        await sb.start()
        received = Recorder(b.affinity)
        try:
            expires = time.time() + 300
            # What `Affinity.served` leaves for sharing: (key, route label, expires, cached tokens).
            a.affinity.changes.append(("kprefix-1", LABEL, expires, 1024))
            await until(lambda: received.calls, 1.0, "the affinity did not reach the other replica within a second")
            assert received.calls == [("kprefix-1", LABEL, pytest.approx(expires), 1024)]
        finally:
            await sa.stop()
            await sb.stop()

    run(test)


def test_a_replica_that_starts_later_loads_what_is_current(shared_redis: tuple[redis.Redis, str]) -> None:
    client, prefix = shared_redis

    async def test() -> None:
        a = live()
        sa = replica(a, prefix)
        await sa.start()
        try:
            now = time.time()
            fail(a, LABEL)
            a.health.changes.append(("route-b/gone", now - 1, "failing"))  # already over: not shared
            a.affinity.changes.append(("kprefix-2", LABEL, now + 300, 64))
            a.affinity.changes.append(("kprefix-old", LABEL, now - 1, 64))
            # Stored in Redis by A (with an expiry: nothing is ever deleted, entries lapse).
            await until(lambda: client.exists(f"{prefix}affinity:kprefix-2") and client.zcard(f"{prefix}cooldowns"),
                        1.0, "A did not store its cooldown and affinity")
            assert 0 < client.pttl(f"{prefix}affinity:kprefix-2") <= 300_000
            assert not client.exists(f"{prefix}affinity:kprefix-old")

            c = live()
            cooldowns, affinities = Recorder(c.health), Recorder(c.affinity)
            sc = replica(c, prefix)
            await sc.start()  # waits for the first load
            try:
                assert c.health.cooling(LABEL) is not None  # skipped from its first request on
                assert [call[0] for call in cooldowns.calls] == [LABEL]
                assert affinities.calls == [("kprefix-2", LABEL, pytest.approx(now + 300), 64)]
            finally:
                await sc.stop()
            # A's own entries, loaded again after a reconnection, are not applied to A.
            own = Recorder(a.health)
            await sa._load()
            assert own.calls == []
        finally:
            await sa.stop()

    run(test)


class RecordingMetrics:
    """The `RouteMetrics` side of the contract: `drain()` deltas out, `merge_remote` views in."""

    def __init__(self) -> None:
        self.deltas: list[tuple[str, int, dict[str, float]]] = []
        self.views: list[tuple[dict, dict]] = []

    def drain(self) -> list[tuple[str, int, dict[str, float]]]:
        deltas, self.deltas = self.deltas, []
        return deltas

    def merge_remote(self, minutes: dict, hours: dict, now: float | None = None) -> None:
        self.views.append((minutes, hours))


def test_metric_deltas_add_up_across_replicas(shared_redis: tuple[redis.Redis, str]) -> None:
    client, prefix = shared_redis

    async def test() -> None:
        a, b = live(), live()
        ma, mb = RecordingMetrics(), RecordingMetrics()
        a.metrics, b.metrics = ma, mb  # type: ignore[assignment]
        sa, sb = replica(a, prefix), replica(b, prefix)
        await sa.start()
        await sb.start()
        try:
            minute = int(time.time() // 60)
            ma.deltas.append((LABEL, minute, {"requests": 2.0, "latency_sum": 0.5}))
            ma.deltas.append((LABEL, minute - 1, {"requests": 1.0, "latency_sum": 0.25}))
            mb.deltas.append((LABEL, minute, {"requests": 3.0, "latency_sum": 1.5, "errors": 1.0}))
            both = {minute: {"requests": 5.0, "latency_sum": 2.0, "errors": 1.0},
                    minute - 1: {"requests": 1.0, "latency_sum": 0.25}}

            def agreed(metrics: RecordingMetrics) -> bool:
                return bool(metrics.views) and metrics.views[-1][0].get(LABEL) == both

            await until(lambda: agreed(ma) and agreed(mb), 3.0, "the replicas do not see the same minutes")
            # The hours are read less often: until they are, an earlier (smaller) view may stand.
            hour = minute // 60
            total = {name: sum(bucket.get(name, 0.0) for bucket in both.values())
                     for name in ("requests", "latency_sum", "errors")}

            def hours_agree(metrics: RecordingMetrics) -> bool:
                hours = metrics.views[-1][1].get(LABEL, {})
                return sum(hours.get(h, {}).get("requests", 0.0) for h in (hour, hour - 1)) == total["requests"]

            await until(lambda: hours_agree(ma) and hours_agree(mb), 3.0, "the replicas do not see the same hours")
            ttl = client.ttl(f"{prefix}metrics:{LABEL}:m:{minute}")
            assert 7000 < ttl <= 7200
            assert 8 * 86400 - 100 < client.ttl(f"{prefix}metrics:{LABEL}:h:{hour}") <= 8 * 86400
        finally:
            await sa.stop()
            await sb.stop()

    run(test)


def _metrics_implemented() -> bool:
    return "minutes" in inspect.signature(RouteMetrics.merge_remote).parameters


@pytest.mark.skipif(not _metrics_implemented(), reason="RouteMetrics.drain/merge_remote are not implemented yet")
def test_metrics_recorded_on_one_replica_are_read_on_the_other(shared_redis: tuple[redis.Redis, str]) -> None:
    _, prefix = shared_redis

    async def test() -> None:
        a, b = live(), live()
        sa, sb = replica(a, prefix), replica(b, prefix)
        await sa.start()
        await sb.start()
        try:
            assert b.metrics.value(LABEL, "avg_latency", 900) is None
            for latency in (0.2, 0.4):
                a.metrics.record(LABEL, ok=True, latency=latency, ttft=0.1, output_tokens=10, input_tokens=20)
            await until(lambda: b.metrics.value(LABEL, "avg_latency", 900) is not None, 3.0,
                        "B never saw A's measurements")
            assert b.metrics.value(LABEL, "avg_latency", 900) == pytest.approx(0.3)
            assert b.metrics.value(LABEL, "uptime", 900) == pytest.approx(a.metrics.value(LABEL, "uptime", 900))
        finally:
            await sa.stop()
            await sb.stop()

    run(test)
