"""Replicas sharing routing state through Redis (routing/shared.py, docs/routing.md "Several replicas").

In one event loop, two `LiveRouting`s with a `SharedRouting` each against the shared Redis
(127.0.0.1:6379, keys under a prefix of the test's own): cooldowns and cache affinities cross over
within a second, a replica that starts later loads what is current, metric deltas add up. Then
two real `sluice serve` processes sharing Redis agree on cooldowns, cache affinity and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from sluice.config import CooldownConfig, RoutingConfig
from sluice.errors import UpstreamError
from sluice.routing.live import LiveRouting
from sluice.routing.metrics import RouteMetrics
from sluice.routing.shared import SharedRouting, _View
from tests.conftest import wait_for_health
from tests.redis_server import SHARED_URL, delete_prefix, free_port, shared_redis_or_skip, unique_prefix
from tests.route_upstream import REFUSE, RouteUpstream

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


@contextlib.asynccontextmanager
async def sharing(prefix: str, *states: LiveRouting) -> AsyncIterator[None]:
    """One replica's sharing per state, started in order and stopped at the end of the block."""
    replicas = [replica(state, prefix) for state in states]
    try:
        for one in replicas:
            await one.start()
        yield
    finally:
        for one in replicas:
            await one.stop()


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
        async with sharing(prefix, a, b):
            own = Recorder(a.health)
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

    run(test)


def test_an_affinity_reaches_the_other_replica(shared_redis: tuple[redis.Redis, str]) -> None:
    _, prefix = shared_redis

    async def test() -> None:
        a, b = live(), live()
        async with sharing(prefix, a, b):
            received = Recorder(b.affinity)
            expires = time.time() + 300
            # What `Affinity.served` leaves for sharing: (key, route label, expires, cached tokens).
            a.affinity.changes.append(("kprefix-1", LABEL, expires, 1024))
            await until(lambda: received.calls, 1.0, "the affinity did not reach the other replica within a second")
            assert received.calls == [("kprefix-1", LABEL, pytest.approx(expires), 1024)]

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
        async with sharing(prefix, a, b):
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

    run(test)


def _metrics_implemented() -> bool:
    return "minutes" in inspect.signature(RouteMetrics.merge_remote).parameters


@pytest.mark.skipif(not _metrics_implemented(), reason="RouteMetrics.drain/merge_remote are not implemented yet")
def test_metrics_recorded_on_one_replica_are_read_on_the_other(shared_redis: tuple[redis.Redis, str]) -> None:
    _, prefix = shared_redis

    async def test() -> None:
        a, b = live(), live()
        async with sharing(prefix, a, b):
            assert b.metrics.value(LABEL, "total_requests", 900) is None
            for latency, ttft in ((0.2, 0.1), (0.4, 0.3)):
                a.metrics.record(LABEL, ok=True, latency=latency, ttft=ttft, output_tokens=10, input_tokens=20)
            a.metrics.record(LABEL, ok=False, latency=0.05, ttft=None, output_tokens=None)
            await until(lambda: b.metrics.value(LABEL, "total_requests", 900) is not None, 3.0,
                        "B never saw A's measurements")
            assert b.metrics.value(LABEL, "total_requests", 900) == 3
            assert b.metrics.value(LABEL, "uptime", 900) == pytest.approx(2 / 3)
            assert b.metrics.value(LABEL, "avg_latency", 900) == pytest.approx(0.2)  # to first token
            assert b.metrics.value(LABEL, "avg_e2e_latency", 900) == pytest.approx(0.3)
            assert b.metrics.value(LABEL, "output_tokens", 900) == pytest.approx(10)
            # Windows past an hour read the hours: the same numbers.
            await until(lambda: b.metrics.value(LABEL, "total_requests", 86400) == 3, 3.0, "B never read the hours")

    run(test)


def test_a_pull_reads_only_the_most_recently_measured_routes(shared_redis: tuple[redis.Redis, str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Ad-hoc `provider/any-model` labels come from client input: a week of them must not all be
    # read back (168 hours each) nor kept.
    client, prefix = shared_redis
    monkeypatch.setattr("sluice.routing.shared.MAX_LABELS", 5)
    now = time.time()
    client.zadd(f"{prefix}metrics:labels", {f"p/m{n}": now - 100 + n for n in range(20)})

    async def test() -> None:
        shared = replica(live(), prefix)
        try:
            await shared._pull(hours=True)
            assert sorted(shared._hours.buckets) == [f"p/m{n}" for n in range(15, 20)]
        finally:
            await shared.stop()

    run(test)


# --- two `sluice serve` processes ----------------------------------------------------------------

TEST_DB = 9  # the shared server's database for these tests; every name in it is unique to the run

SERVE_CONFIG = """
database: sqlite:///{db}
redis: redis://127.0.0.1:6379/{redis_db}
master_key: {master}
builtin_catalog: false
routing: {{retries: 0, explore: 0, cooldown: {cooldown}}}
providers:
{providers}
models:
  cool:
    routes: [{{provider: {run}-c1, model: m}}, {{provider: {run}-c2, model: m}}]
  sticky:
    routes: [{{provider: {run}-s1, model: m}}, {{provider: {run}-s2, model: m}}]
  speed:
    routes: [{{provider: {run}-slow, model: m}}, {{provider: {run}-fast, model: m}}]
"""
ROUTES = ("c1", "c2", "s1", "s2", "slow", "fast")
# A opens a cooldown after two failures; B never opens one itself, so a cooldown on B can only be
# A's, shared (and B can be polled while the route keeps failing without learning it on its own).
COOLDOWNS = ("{failures: 2}", "{failures: 1000, min_requests: 1000}")


class Replicas:
    """Two `sluice serve` processes (A and B) sharing Redis, in front of one `RouteUpstream`."""

    def __init__(self, run_id: str, upstream: RouteUpstream, urls: tuple[str, str], master: str) -> None:
        self.run, self.upstream, self.urls, self.master = run_id, upstream, urls, master

    def provider(self, route: str) -> str:
        return f"{self.run}-{route}"

    def ask(self, replica: int, model: str, **body: Any) -> dict[str, Any]:
        resp = httpx.post(f"{self.urls[replica]}/v1/responses", json={"model": model, "input": "hi", **body},
                          headers={"authorization": f"Bearer {self.master}"}, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def tried(self, response: dict[str, Any]) -> list[tuple[str, str]]:
        """(route, outcome) of each attempt, routes by their short names."""
        prefix = f"{self.run}-"
        return [(a["provider"].removeprefix(prefix), a["outcome"]) for a in response["routing"]["attempts"]]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    client = shared_redis_or_skip()
    run_id = f"t{uuid.uuid4().hex[:8]}"
    master = f"sk-test-{uuid.uuid4().hex}"
    tmp = tmp_path_factory.mktemp("replicas")
    procs: list[subprocess.Popen[bytes]] = []
    with RouteUpstream() as upstream:
        providers = "\n".join(f"  {run_id}-{route}: {{type: openai-chat, api_key: sk-upstream-0000, "
                               f"base_url: \"{upstream.url}/{run_id}-{route}/v1\"}}" for route in ROUTES)
        urls = []
        try:
            for name, cooldown in zip(("a", "b"), COOLDOWNS, strict=True):
                config = tmp / f"{name}.yaml"
                config.write_text(SERVE_CONFIG.format(db=tmp / f"{name}.db", redis_db=TEST_DB, master=master,
                                                      providers=providers, run=run_id, cooldown=cooldown))
                port = free_port()
                log = (tmp / f"{name}.log").open("wb")
                procs.append(subprocess.Popen([sys.executable, "-m", "sluice", "serve", "--config", str(config),
                                               "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
                urls.append(f"http://127.0.0.1:{port}")
            for url, proc in zip(urls, procs, strict=True):
                wait_for_health(int(url.rsplit(":", 1)[1]), proc)
                assert httpx.get(f"{url}/health").json() == {"status": "ok", "redis": "ok"}
            yield Replicas(run_id, upstream, (urls[0], urls[1]), master)
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=20)
            _forget_run(client.connection_pool.connection_kwargs, run_id)
            client.close()


def _forget_run(kwargs: dict[str, Any], run_id: str) -> None:
    """Delete what the run left in the test database (its affinities just expire)."""
    client = redis.Redis(host=kwargs.get("host", "127.0.0.1"), port=kwargs.get("port", 6379), db=TEST_DB,
                         decode_responses=True)
    try:
        for key in client.scan_iter(match=f"sluice:metrics:{run_id}-*", count=1000):
            client.delete(key)
        for zset in ("sluice:cooldowns", "sluice:metrics:labels"):
            for member in client.zrange(zset, 0, -1):
                if run_id in member:
                    client.zrem(zset, member)
    finally:
        client.close()


def test_replicas_share_cooldowns_and_cache_affinity(replicas: Replicas) -> None:
    upstream = replicas.upstream
    # Cache affinity, learned on A: served by s2 (pinned), for one prompt_cache_key.
    first = replicas.ask(0, f"{replicas.provider('s2')}/sticky", prompt_cache_key="conversation-1")
    assert replicas.tried(first) == [("s2", "ok")]

    # A cooldown, opened on A: c1 fails twice (`failures: 2`), c2 serves.
    upstream.failing.add(replicas.provider("c1"))
    for _ in range(2):
        assert replicas.tried(replicas.ask(0, "cool")) == [("c1", "error"), ("c2", "ok")]
    opened = time.monotonic()
    # B is asked until it skips c1: c1 keeps failing, and B never opens a cooldown itself, so
    # the skip is A's cooldown. (Were c1 answering, a request B had in flight to it when the
    # cooldown arrived would end it with its success, as it should.)
    while (tried := replicas.tried(replicas.ask(1, "cool")))[0] != ("c1", "cooldown"):
        assert tried == [("c1", "error"), ("c2", "ok")]
        assert time.monotonic() - opened < 2.0, "B did not learn A's cooldown within 2 s"
    assert tried == [("c1", "cooldown"), ("c2", "ok")]
    upstream.failing.clear()

    # A published the affinity no later than the cooldown, and B applies what A publishes in
    # order: B knows it now. Without it, B would try s1 first (config order).
    second = replicas.ask(1, "sticky", prompt_cache_key="conversation-1")
    assert replicas.tried(second) == [("s2", "ok")]
    assert replicas.tried(replicas.ask(1, "sticky", prompt_cache_key="another")) == [("s1", "ok")]


@pytest.mark.skipif(not _metrics_implemented(), reason="RouteMetrics.drain/merge_remote are not implemented yet")
def test_replicas_sort_on_the_same_metrics(replicas: Replicas) -> None:
    upstream = replicas.upstream
    slow, fast = replicas.provider("slow"), replicas.provider("fast")
    sort = {"routing": {"provider": {"sort": "p50_latency"}}}
    # B first measures the opposite of the truth on its own: `fast` slow, `slow` fast.
    upstream.delay = {fast: 0.2}
    for route in (slow, fast):
        replicas.ask(1, f"{route}/speed")
    upstream.delay = {slow: 0.2}
    # A measures the truth, more often.
    for _ in range(5):
        for route in (slow, fast):
            replicas.ask(0, f"{route}/speed")
    # On its own numbers B would keep choosing `slow`; once the shared numbers (A's and its own
    # together) arrive, it chooses `fast`. B is probed with requests the upstream refuses as
    # malformed: the gateway stops at the first route (named by x-sluice-route) and measures nothing.
    deadline = time.monotonic() + 8
    while True:
        probe = httpx.post(f"{replicas.urls[1]}/v1/responses", json={"model": "speed", "input": REFUSE, **sort},
                           headers={"authorization": f"Bearer {replicas.master}"}, timeout=30)
        assert probe.status_code == 400, probe.text
        if probe.headers["x-sluice-route"] == f"{fast}/m":
            break
        assert probe.headers["x-sluice-route"] == f"{slow}/m"
        assert time.monotonic() < deadline, "B never sorted on the shared metrics"
        time.sleep(0.05)
    assert replicas.tried(replicas.ask(1, "speed", **sort)) == [("fast", "ok")]


def test_a_refresh_reads_the_newest_buckets_and_a_full_read_the_rest() -> None:
    """Between full reads only the newest minutes are read: they are the ones still growing."""
    view = _View(60, 60, full_every=30.0, key=lambda label, index: f"{label}:{index}")
    now = 1000 * 60 + 5.0  # minute 1000
    plan = view.plan(["r"], now, clock=0.0)
    assert plan.full and [index for _, index in plan.wanted] == list(range(941, 1001))
    view.install(plan, [{"n": "1"} if index in (950, 1000) else {} for _, index in plan.wanted])
    assert view.current() == {"r": {950: {"n": 1.0}, 1000: {"n": 1.0}}}

    plan = view.plan(["r", "new"], now + 60, clock=2.0)  # minute 1001: r's newest three, all of the new route
    assert [i for label, i in plan.wanted if label == "r"] == [999, 1000, 1001]
    assert [i for label, i in plan.wanted if label == "new"] == list(range(942, 1002))
    view.install(plan, [{"n": "2"} if (label, i) == ("r", 1001) else {} for label, i in plan.wanted])
    # 950 kept from the full read; 1000 expired meanwhile (read empty).
    assert view.current() == {"r": {950: {"n": 1.0}, 1001: {"n": 2.0}}}

    plan = view.plan(["r"], now + 60, clock=31.0)  # the whole window again: late pushes show up
    assert plan.full and len(plan.wanted) == 60
    view.install(plan, [{"n": "5"} if i == 960 else {} for _, i in plan.wanted])
    assert view.current() == {"r": {960: {"n": 5.0}}}
    view.install(view.plan([], now + 60, clock=32.0), [])  # no longer measured anywhere: forgotten
    assert view.current() == {}
