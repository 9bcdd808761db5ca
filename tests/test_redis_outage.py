"""Redis goes away and comes back under replicas sharing routing state (routing/shared.py).

On a private `redis-server` the test kills and starts again on the same port: requests never wait
on Redis (they keep succeeding, fast), the outage is logged once, what a replica learns meanwhile
reaches the others when Redis is back, and a gateway started while Redis is down serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sluice.routing import shared as shared_module
from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.redis_server import PrivateRedis, private_redis
from tests.route_upstream import RouteUpstream
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
            await until(lambda: b.metrics.value(LABEL, "total_requests", 900) == 1, 3.0,
                        "the measurement made during the outage never arrived")
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


# --- a gateway -----------------------------------------------------------------------------------

GATEWAY_CONFIG = """
database: sqlite:///{db}
redis: {redis}
master_key: {master}
builtin_catalog: false
routing: {{retries: 0, cooldown: {{failures: 2}}}}
providers:
  r1: {{type: openai-chat, base_url: "{upstream}/r1/v1", api_key: sk-upstream-0000}}
  r2: {{type: openai-chat, base_url: "{upstream}/r2/v1", api_key: sk-upstream-0000}}
models:
  m:
    routes: [{{provider: r1, model: m}}, {{provider: r2, model: m}}]
"""


@contextlib.contextmanager
def gateway(server: PrivateRedis, tmp_path: Path) -> Iterator[tuple[RunningGateway, RouteUpstream]]:
    with RouteUpstream() as upstream, running_gateway(GATEWAY_CONFIG.format(
            db=tmp_path / "sluice.db", redis=server.url, master=MASTER_KEY, upstream=upstream.url)) as running:
        yield running, upstream


def ask(gw: RunningGateway) -> tuple[dict, float]:
    """One request: the Response and how long it took (it must never depend on Redis)."""
    started = time.monotonic()
    resp = httpx.post(f"{gw.url}/v1/responses", json={"model": "m", "input": "hi"},
                      headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
    took = time.monotonic() - started
    assert resp.status_code == 200, resp.text
    return resp.json(), took


def health(gw: RunningGateway) -> dict:
    return httpx.get(f"{gw.url}/health", timeout=5).json()


def poll(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# Upstream answers are instant: a request is milliseconds. One that waited on Redis would take
# at least its timeout (0.5 s); a stopped server is refused at once, a frozen one never answers.
FAST = 0.4


def test_requests_keep_succeeding_through_an_outage(server: PrivateRedis, tmp_path: Path) -> None:
    with gateway(server, tmp_path) as (gw, upstream):
        assert health(gw) == {"status": "ok", "redis": "ok"}
        for _ in range(5):
            ask(gw)

        server.freeze()  # a hung server: connections open, nothing answers
        for _ in range(10):
            assert ask(gw)[1] < FAST
        poll(lambda: health(gw)["redis"] == "unavailable", 5, "the hung server was not noticed")
        for _ in range(10):
            assert ask(gw)[1] < FAST
        server.thaw()
        poll(lambda: health(gw)["redis"] == "ok", 5, "sharing did not resume after the server thawed")

        server.stop()  # gone: connections refused
        upstream.failing.add("r1")  # a cooldown opened during the outage is kept for later
        for _ in range(10):
            response, took = ask(gw)
            assert took < FAST
        assert [a["outcome"] for a in response["routing"]["attempts"]] == ["cooldown", "ok"]
        poll(lambda: health(gw)["redis"] == "unavailable", 5, "the outage was not noticed")
        assert httpx.get(f"{gw.url}/ready", timeout=5).status_code == 200  # Redis is optional

        server.start()  # same port, empty: what was learned meanwhile is sent again
        poll(lambda: health(gw)["redis"] == "ok", 5, "sharing did not resume")
        client = server.client()
        poll(lambda: any("\tr1/m\t" in member for member in client.zrange("sluice:cooldowns", 0, -1)), 5,
             "the cooldown opened during the outage never reached Redis")
        # And the measurements made meanwhile (the restarted server is empty): r2 served only then.
        def pushed(label: str) -> float:
            keys = client.scan_iter(f"sluice:metrics:{label}:m:*")
            return sum(float(client.hget(key, "requests") or 0) for key in keys)

        poll(lambda: pushed("r2/m") == 10 and pushed("r1/m") >= 2, 5, "the outage's measurements never reached Redis")
        client.close()


def test_a_gateway_started_while_redis_is_down_serves(server: PrivateRedis, tmp_path: Path) -> None:
    server.stop()
    started = time.monotonic()
    with gateway(server, tmp_path) as (gw, _):
        assert time.monotonic() - started < 5
        assert health(gw) == {"status": "ok", "redis": "unavailable"}
        assert httpx.get(f"{gw.url}/ready", timeout=5).status_code == 200
        for _ in range(5):
            assert ask(gw)[1] < FAST
        server.start()
        poll(lambda: health(gw)["redis"] == "ok", 5, "the gateway never joined once Redis came up")
