"""Live route metrics (routing/metrics.py, docs/routing.md "Live metrics"): buckets and windows,
percentiles against exact ones, folding and pruning, the Redis sharing interface (drain /
merge_remote, staleness), and the live sorts through a running gateway with the official SDK."""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from sluice.routing import metrics as metrics_module
from sluice.routing.metrics import BINS, CACHE_TTL, FIELDS, RATIO, RouteMetrics, parse_interval
from tests.conftest import MASTER_KEY, running_gateway
from tests.replay.recordings import fixtures_root, load
from tests.replay.server import ReceivedRequest, ReplayServer

T0 = 1_800_000_000.0  # a wall-clock time on an hour boundary: minute 30,000,000, hour 500,000
MIN, HOUR, DAY = 60.0, 3600.0, 86400.0
LABEL = "p/m"


def fresh() -> RouteMetrics:
    return RouteMetrics(cache_ttl=0)  # every read recomputed: the tests move the clock by hand


def ok(metrics: RouteMetrics, at: float, latency: float = 0.5, ttft: float | None = 0.1, out: int | None = 100,
       inp: int | None = 1000, label: str = LABEL) -> None:
    metrics.record(label, ok=True, latency=latency, ttft=ttft, output_tokens=out, input_tokens=inp, now=at)


def fail(metrics: RouteMetrics, at: float, label: str = LABEL) -> None:
    metrics.record(label, ok=False, latency=0.05, ttft=None, output_tokens=None, now=at)


# --- intervals -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("15m", 900), ("15 minutes", 900), ("1 minute", 60), ("30min", 1800), ("1h", 3600), ("2 hours", 7200),
    ("24h", 86400), ("7d", 604800), ("1 day", 86400), ("2w", 1209600), ("1y", 31536000), (" 5 mins ", 300),
    ("0m", 60),  # at least one minute: the buckets' resolution
])
def test_parse_interval(text: str, seconds: int) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["15", "m", "15s", "1.5h", "fortnight", "-1h", "15 M"])
def test_parse_interval_rejects_other_shapes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_interval(text)


# --- what each metric means --------------------------------------------------------------------------

def test_no_data_is_none_for_every_metric() -> None:
    metrics = fresh()
    for name in ("avg_latency", "p50_latency", "uptime", "throughput", "total_requests", "output_tokens"):
        assert metrics.value(LABEL, name, 900, now=T0) is None


def test_definitions() -> None:
    metrics = fresh()
    # Streamed: first token after 0.2 s, 100 tokens over the next 0.8 s.
    ok(metrics, T0, latency=1.0, ttft=0.2, out=100, inp=1000)
    # A whole answer: the first token is the answer; 300 tokens generated over the whole 2 s.
    ok(metrics, T0 + 1, latency=2.0, ttft=2.0, out=300, inp=3000)
    fail(metrics, T0 + 2)
    fail(metrics, T0 + 3)

    def value(name: str) -> float | None:
        return metrics.value(LABEL, name, 900, now=T0 + 10)

    assert value("total_requests") == 4
    assert value("uptime") == 0.5
    assert value("avg_latency") == pytest.approx(1.1)  # time to first token, successes only
    assert value("min_latency") == 0.2 and value("max_latency") == 2.0  # exact in one process
    assert value("avg_e2e_latency") == pytest.approx(1.5)
    assert value("throughput") == pytest.approx(400 / 2.8)  # tokens summed / generation seconds summed
    assert value("output_tokens") == 200 and value("input_tokens") == 2000 and value("total_tokens") == 2200
    assert 0.2 / RATIO <= value("p0_latency") <= 0.2 and 2.0 <= value("p100_latency") <= 2.0 * RATIO


def test_only_failures_has_requests_and_uptime_but_no_latency() -> None:
    metrics = fresh()
    fail(metrics, T0)
    assert metrics.value(LABEL, "total_requests", 900, now=T0) == 1
    assert metrics.value(LABEL, "uptime", 900, now=T0) == 0.0
    assert metrics.value(LABEL, "p50_latency", 900, now=T0) is None
    assert metrics.value(LABEL, "throughput", 900, now=T0) is None


@pytest.mark.parametrize("kind", ["latency", "e2e_latency"])
def test_percentiles_match_sorted_samples_within_a_bin(kind: str) -> None:
    rng = random.Random(9)
    samples = [rng.lognormvariate(math.log(0.3), 1.2) for _ in range(5000)]
    samples += [0.0004, 900.0]  # in the first bin (linear from 0) and in the last bounded one
    metrics = fresh()
    for i, sample in enumerate(samples):
        if kind == "latency":
            ok(metrics, T0 + i % 600, latency=sample + 1.0, ttft=sample)
        else:
            ok(metrics, T0 + i % 600, latency=sample, ttft=None)
    ordered = sorted(samples)
    for q in (0, 1, 5, 10, 25, 50, 75, 90, 95, 99, 100):
        exact = ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]
        got = metrics.value(LABEL, f"p{q}_{kind}", 900, now=T0 + 600)
        assert got is not None
        if exact < 0.001:  # the first bin is linear from 0 to 1 ms
            assert got <= 0.001
        else:
            # Same bin as the exact sample (one bin wide past the last edge).
            assert exact / RATIO <= got <= exact * RATIO, (q, exact, got)


def test_latencies_past_the_last_edge_count_in_the_last_bin() -> None:
    metrics = fresh()
    ok(metrics, T0, latency=3600.0, ttft=1500.0)
    assert metrics.value(LABEL, "p50_latency", 900, now=T0) >= 0.001 * RATIO ** (BINS - 2)
    assert metrics.value(LABEL, "max_latency", 900, now=T0) == 1500.0  # exact


# --- windows, folding, pruning -----------------------------------------------------------------------

def test_minute_windows_start_at_the_bucket_holding_now_minus_interval() -> None:
    metrics = fresh()
    ok(metrics, T0)  # minute 0
    ok(metrics, T0 + 20 * MIN + 30)  # minute 20
    ok(metrics, T0 + 44 * MIN + 59)  # minute 44
    now = T0 + 45 * MIN + 10
    assert metrics.value(LABEL, "total_requests", parse_interval("1m"), now=now) == 1  # minutes 44-45
    assert metrics.value(LABEL, "total_requests", parse_interval("15m"), now=now) == 1  # minutes 30-45
    assert metrics.value(LABEL, "total_requests", parse_interval("25m"), now=now) == 2  # minutes 20-45
    assert metrics.value(LABEL, "total_requests", parse_interval("45m"), now=now) == 3  # minutes 0-45
    assert metrics.value(LABEL, "total_requests", parse_interval("15m"), now=now + 15 * MIN) is None


def test_hour_windows_fold_old_minutes_and_keep_every_request() -> None:
    metrics = fresh()
    for minute in range(0, 5 * 60):  # five hours, one success a minute, one failure every 10
        ok(metrics, T0 + minute * MIN + 1)
        if minute % 10 == 0:
            fail(metrics, T0 + minute * MIN + 2)
    series = metrics._local[LABEL]
    assert len(series.minutes) <= 61 and sorted(series.hours) == [500_000, 500_001, 500_002, 500_003]
    now = T0 + 5 * HOUR - 1
    assert metrics.value(LABEL, "total_requests", parse_interval("24h"), now=now) == 300 + 30
    assert metrics.value(LABEL, "uptime", parse_interval("24h"), now=now) == pytest.approx(300 / 330)
    # 2h: the hour holding now - 2h (hour 2) onwards: hours 2, 3 and 4.
    assert metrics.value(LABEL, "total_requests", parse_interval("2h"), now=now) == 3 * 66
    # min/max stay exact through folding.
    ok(metrics, now, ttft=0.01)
    assert metrics.value(LABEL, "min_latency", parse_interval("7d"), now=now) == 0.01
    assert metrics.value(LABEL, "max_latency", parse_interval("7d"), now=now) == 0.1


def test_hours_past_seven_days_are_dropped() -> None:
    metrics = fresh()
    for day in range(10):
        ok(metrics, T0 + day * DAY)
    now = T0 + 9 * DAY + 1
    assert len(metrics._local[LABEL].hours) == 7  # days 2..8 folded; day 9 still a minute bucket
    assert metrics.value(LABEL, "total_requests", parse_interval("7d"), now=now) == 8
    assert metrics.value(LABEL, "total_requests", parse_interval("1y"), now=now) == 8  # what is kept
    assert metrics.value(LABEL, "total_requests", parse_interval("3d"), now=now) == 4  # days 6..9


def test_values_are_cached_for_a_second() -> None:
    metrics = RouteMetrics()  # the default cache
    ok(metrics, T0)
    assert metrics.value(LABEL, "total_requests", 900, now=T0 + 0.1) == 1
    ok(metrics, T0 + 0.2)
    assert metrics.value(LABEL, "total_requests", 900, now=T0 + 0.5) == 1  # reused
    assert metrics.value(LABEL, "total_requests", 900, now=T0 + 1.2) == 2  # recomputed


def test_the_clock_going_back_does_not_serve_stale_sums() -> None:
    metrics = RouteMetrics()
    ok(metrics, T0 + 5 * MIN)
    ok(metrics, T0 + 6 * MIN)
    assert metrics.value(LABEL, "total_requests", 900, now=T0 + 6 * MIN) == 2
    ok(metrics, T0 + 4 * MIN)  # an earlier minute written again
    ok(metrics, T0 + 6 * MIN + 30)
    assert metrics.value(LABEL, "total_requests", 900, now=T0 + 6 * MIN + 40) == 4


def test_labels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "MAX_LABELS", 3)
    metrics = fresh()
    for i in range(5):
        ok(metrics, T0 + i * MIN, label=f"p/m{i}")
    ok(metrics, T0 + 5 * MIN, label="p/m2")  # active again: kept over m3
    ok(metrics, T0 + 6 * MIN, label="p/new")
    assert sorted(metrics._local) == ["p/m2", "p/m4", "p/new"]


# --- sharing: drain / merge_remote ---------------------------------------------------------------------

def test_drain_hands_over_each_delta_once() -> None:
    metrics = fresh()
    ok(metrics, T0, ttft=0.1, latency=0.5)
    fail(metrics, T0 + 1)
    first = metrics.drain()
    assert [(label, minute) for label, minute, _ in first] == [(LABEL, 30_000_000)]
    fields = first[0][2]
    assert set(fields) <= set(FIELDS) and fields["requests"] == 2 and fields["successes"] == 1
    assert sum(v for k, v in fields.items() if k[0] == "t" and k[1:].isdigit()) == 1  # one ttft bin
    assert metrics.drain() == []  # nothing new
    ok(metrics, T0 + 2)
    ok(metrics, T0 + MIN)
    second = dict(((label, minute), fields) for label, minute, fields in metrics.drain())
    assert second[(LABEL, 30_000_000)]["requests"] == 1 and second[(LABEL, 30_000_001)]["requests"] == 1
    assert all(name in FIELDS and amount > 0 for f in second.values() for name, amount in f.items())


class FakeRedis:
    """What routing/shared.py keeps in Redis: every drained delta added to its minute and its hour."""

    def __init__(self) -> None:
        self.minutes: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
        self.hours: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))

    def push(self, replica: RouteMetrics) -> None:
        for label, minute, fields in replica.drain():
            for name, amount in fields.items():
                self.minutes[label][minute][name] += amount
                self.hours[label][minute // 60][name] += amount


def test_every_replica_sorts_on_the_same_numbers() -> None:
    rng = random.Random(3)
    a, b, alone, redis = fresh(), fresh(), fresh(), FakeRedis()
    for i, at in enumerate(sorted(T0 + rng.uniform(0, 3 * HOUR) for _ in range(400))):
        latency, tokens, failed = rng.uniform(0.05, 3.0), rng.randint(1, 500), rng.random() < 0.1
        for target in (a if i % 2 else b, alone):
            if failed:
                fail(target, at)
            else:
                ok(target, at, latency=latency, ttft=latency / 3, out=tokens)
        if i % 20 == 0:  # shared.py drains every second or so: far more often than minutes fold
            redis.push(a)
            redis.push(b)
    redis.push(a)
    redis.push(b)
    now = T0 + 3 * HOUR
    a.merge_remote(redis.minutes, redis.hours, now=now)
    b.merge_remote(redis.minutes, redis.hours, now=now)
    for name in ("total_requests", "uptime", "avg_latency", "p50_latency", "p99_e2e_latency", "throughput",
                 "output_tokens", "avg_e2e_latency"):
        for interval in (900, 3600, 86400):
            expected = alone.value(LABEL, name, interval, now=now)
            assert expected is not None
            assert a.value(LABEL, name, interval, now=now) == b.value(LABEL, name, interval, now=now)
            assert a.value(LABEL, name, interval, now=now) == pytest.approx(expected), (name, interval)
    # min/max are not shared (not additive): the remote view reads them off the histogram.
    exact = alone.value(LABEL, "min_latency", 86400, now=now)
    assert exact / RATIO <= a.value(LABEL, "min_latency", 86400, now=now) <= exact


def test_remote_view_while_fresh_then_local() -> None:
    metrics = fresh()
    ok(metrics, T0)
    remote_minutes = {LABEL: {30_000_000: {"requests": 50, "successes": 25}}}
    remote_hours = {LABEL: {500_000: {"requests": 70, "successes": 35}}}
    assert metrics.value(LABEL, "total_requests", 900, now=T0 + 1) == 1  # never merged: local
    metrics.merge_remote(remote_minutes, remote_hours, now=T0 + 1)
    assert metrics.value(LABEL, "total_requests", 900, now=T0 + 2) == 50
    assert metrics.value(LABEL, "uptime", 900, now=T0 + 2) == 0.5
    assert metrics.value(LABEL, "total_requests", 86400, now=T0 + 2) == 70  # hours hold their minutes
    assert metrics.value("p/other", "total_requests", 900, now=T0 + 2) is None
    ok(metrics, T0 + 3, label="p/other")  # a route the remote view does not know: local
    assert metrics.value("p/other", "total_requests", 900, now=T0 + 4) == 1
    # Redis unreachable: no merge for more than 10 s, the local buckets answer again.
    assert metrics.value(LABEL, "total_requests", 900, now=T0 + 11) == 50
    assert metrics.value(LABEL, "total_requests", 900, now=T0 + 11.5) == 1


# --- through a running gateway, with the official SDK -----------------------------------------------

FIX = fixtures_root() / "openai-responses/simonw-llm"
WHOLE = load(FIX / "test_responses_basic_non_streaming.yaml")[0]
STREAMED = load(FIX / "test_responses_basic_streaming.yaml")[0]
SLOW_FIRST_BYTE = 0.08

GATEWAY_CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
routing: {{explore: {explore}, retries: 0}}
providers:
  slow: {{type: openai, base_url: "{upstream}/v1", api_key: sk-upstream-slow-0000}}
  fast: {{type: openai, base_url: "{upstream}/v1", api_key: sk-upstream-fast-0000}}
models:
  duo:
    routes:
      - {{provider: slow, model: slow-1, price: {{input: 0.5, output: 1.0}}}}
      - {{provider: fast, model: fast-1, price: {{input: 5.0, output: 10.0}}}}
"""


class TwoSpeeds(ReplayServer):
    """Answers every request; `slow-1` only after SLOW_FIRST_BYTE seconds."""

    def __init__(self) -> None:
        super().__init__()
        self._pick = threading.Lock()

    def _take(self, request: ReceivedRequest):  # type: ignore[no-untyped-def]
        body = request.json or {}
        with self._pick:
            self.enqueue(STREAMED if body.get("stream") else WHOLE,
                         delay_before_headers=SLOW_FIRST_BYTE if body.get("model") == "slow-1" else 0.0)
            return super()._take(request)


@pytest.fixture(scope="module")
def two_speeds() -> Iterator[TwoSpeeds]:
    with TwoSpeeds() as server:
        yield server


@contextlib.contextmanager
def _client(two_speeds: TwoSpeeds, tmp_path: Path, explore: float) -> Iterator[openai.OpenAI]:
    text = GATEWAY_CONFIG.format(db=tmp_path / "sluice.db", master=MASTER_KEY, upstream=two_speeds.url,
                                 explore=explore)
    with running_gateway(text) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)
        client.gateway = gateway  # type: ignore[attr-defined]
        yield client


def _served(client: openai.OpenAI, routing: dict | None = None, model: str = "duo") -> str:
    raw = client.responses.with_raw_response.create(model=model, input="hi",
                                                    extra_body={"routing": routing} if routing else None)
    response = raw.parse()
    attempts = response.model_extra["routing"]["attempts"]
    assert raw.headers["x-sluice-route"] == response.model
    assert f"{attempts[-1]['provider']}/{attempts[-1]['model']}" == response.model
    return response.model


def test_sdk_live_sorts_pick_the_measured_best(two_speeds: TwoSpeeds, tmp_path: Path) -> None:
    with _client(two_speeds, tmp_path, explore=0.0) as client:
        # Nothing measured yet, no exploration: the config order.
        assert _served(client, {"provider": {"sort": "p50_latency"}}) == "slow/slow-1"
        for _ in range(4):  # warm-up: each route measured through its pinned name
            assert _served(client, model="slow/duo") == "slow/slow-1"
            assert _served(client, model="fast/duo") == "fast/fast-1"
        time.sleep(CACHE_TTL + 0.05)  # the first request's "no data" is reused for a second
        # Medians: a load hiccup on one request of the fast route does not flip them.
        assert _served(client, {"provider": {"sort": "p50_latency"}}) == "fast/fast-1"
        assert _served(client, {"model": {"sort": "p50_e2e_latency"}, "provider": {"interval": "1h"}}) == \
            "fast/fast-1"
        assert _served(client, {"provider": {"sort": "cost"}}) == "slow/slow-1"  # the cheap one
        # A pinned provider stays first whatever the sort.
        assert _served(client, {"provider": {"sort": "p50_latency"}}, model="slow/duo") == "slow/slow-1"
        with client.responses.stream(model="duo", input="hi",
                                     extra_body={"routing": {"provider": {"sort": "p50_latency"}}}) as stream:
            assert stream.get_final_response().model == "fast/fast-1"


def test_sdk_unmeasured_route_is_explored(two_speeds: TwoSpeeds, tmp_path: Path) -> None:
    with _client(two_speeds, tmp_path, explore=1.0) as client:
        served = set()
        for _ in range(25):
            # explore 1.0: an unmeasured route goes first whenever there is one, chosen at random
            # while both are; once one is measured (values are reused for ~1 s), the other. Both
            # serve within 25 requests unless 24 coin flips in a row come out the same.
            served.add(_served(client, {"provider": {"sort": "p50_latency"}}))
            if len(served) == 2:
                break
        assert served == {"slow/slow-1", "fast/fast-1"}
        time.sleep(CACHE_TTL + 0.05)  # the last "no data" read is reused for a second
        metrics = client.gateway.app.pipeline.live.metrics  # type: ignore[attr-defined]
        assert all(metrics.value(label, "p50_latency", 900) is not None for label in served)
        # Both measured: nothing left to explore (even at 1.0), the sort decides, every time.
        assert len({_served(client, {"provider": {"sort": "p50_latency"}}) for _ in range(4)}) == 1
