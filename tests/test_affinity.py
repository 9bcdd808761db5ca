"""Cache affinity and route health: what the gateway remembers between requests.

Units first (`routing/affinity.py`, `routing/health.py`), then the behaviour through a gateway
with the official SDK: a conversation sticks to the route that holds its prompt cache, a `cost`
sort counts what losing that cache would cost, and a route in cooldown is passed over.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest

from sluice.canonical.request import parse_request
from sluice.config import AffinityConfig, CooldownConfig, RoutingConfig
from sluice.errors import UpstreamError
from sluice.pipeline.context import Attempt, RequestContext
from sluice.pipeline.core import Pipeline
from sluice.routing.affinity import Affinity, derived_prompt_cache_key
from sluice.routing.catalog import Route
from sluice.routing.health import FAILING, RATE_LIMITED, RouteHealth
from sluice.routing.live import LivePolicy, LiveRouting
from sluice.routing.policy import SKIPPED, DefaultPolicy
from sluice.state.keys import MASTER, Principal
from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.replay.recordings import Exchange, fixtures_root, load
from tests.replay.server import ReplayServer

ANSWER = load(fixtures_root() / "openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml")[0]


def _ctx(body: dict[str, Any], caller: Principal = MASTER) -> RequestContext:
    request = parse_request(json.dumps({"model": "m", "input": "hi", **body}).encode())
    return RequestContext.create(caller, request, deadline_seconds=60)


def _route(provider: str) -> Route:
    return Route(provider=provider, model="m", price=None, capabilities=frozenset(), canonical="m")


# --- affinity ----------------------------------------------------------------------------------


def test_prefix_keys_per_caller_and_kind() -> None:
    affinity = Affinity(AffinityConfig())
    team_a, team_b = Principal("a", 1), Principal("b", 2)
    keyed = affinity.key(_ctx({"prompt_cache_key": "conv-1"}, team_a))
    assert keyed is not None and keyed == affinity.key(_ctx({"prompt_cache_key": "conv-1", "input": "other"}, team_a))
    assert keyed != affinity.key(_ctx({"prompt_cache_key": "conv-1"}, team_b))  # no sharing across keys
    assert affinity.key(_ctx({"previous_response_id": "resp_1"}, team_a)) != keyed
    # The same instructions and tools make the same prefix; a request with no prefix has no key.
    prefix = affinity.key(_ctx({"instructions": "You are terse.", "input": "one"}))
    assert prefix == affinity.key(_ctx({"instructions": "You are terse.", "input": "two"}))
    system = {"input": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "x"}]}
    assert affinity.key(_ctx(system)) not in (None, prefix)
    assert affinity.key(_ctx({"input": "just a question"})) is None


def test_served_routes_are_remembered_for_the_cache_lifetime() -> None:
    affinity = Affinity(AffinityConfig(ttl=300, ttl_1h=3600))
    affinity.sharing = True  # as when routing/shared.py runs
    ctx = _ctx({"prompt_cache_key": "conv-1"})
    ctx.routing["affinity"] = key = affinity.key(ctx)
    usage = {"input_tokens": 5000, "input_tokens_details": {"cached_tokens": 1000, "cached_tokens_created": 3000}}
    affinity.served(ctx, _route("two"), usage)
    assert affinity.lookup(key) == ("two/m", 4000)  # read + written: what the next turn can read
    assert affinity.lookup(key, now=time.time() + 301) is None
    # The next turn of the conversation (previous_response_id = this response) holds the same route.
    follow = _ctx({"previous_response_id": ctx.response_id})
    assert affinity.lookup(affinity.key(follow)) == ("two/m", 4000)
    # Shared with the other replicas.
    assert {change[0] for change in affinity.changes} == {key, affinity.key(follow)}

    hour = _ctx({"prompt_cache_key": "conv-2", "cache_control": {"type": "ephemeral", "ttl": "1h"}})
    hour.routing["affinity"] = hour_key = affinity.key(hour)
    affinity.served(hour, _route("one"), usage)
    assert affinity.lookup(hour_key, now=time.time() + 3000) == ("one/m", 4000)


def test_affinity_memory_is_bounded_and_remote_entries_merge() -> None:
    affinity = Affinity(AffinityConfig(max_entries=2))
    for n in range(3):
        affinity.apply_remote(f"k{n}", "one/m", 1e12, 0)
    assert affinity.lookup("k0") is None and affinity.lookup("k2") == ("one/m", 0)
    affinity.apply_remote("k2", "two/m", 1e12 + 5, 7)  # newer wins
    affinity.apply_remote("k2", "one/m", 1e11, 0)  # older loses
    assert affinity.lookup("k2") == ("two/m", 7)


def test_derived_prompt_cache_key_is_per_key_and_user() -> None:
    first = derived_prompt_cache_key(Principal("a", 1), None)
    assert first == derived_prompt_cache_key(Principal("a", 1), None)
    assert first.startswith("sluice-") and MASTER_KEY not in first
    assert first != derived_prompt_cache_key(Principal("a", 1), "user-7")
    assert first != derived_prompt_cache_key(Principal("b", 2), None)


# --- health ------------------------------------------------------------------------------------


def _error(status: int, retry_after: float | None = None, code: str | None = None) -> UpstreamError:
    return UpstreamError("x", provider="p", retryable=True, status=status, retry_after=retry_after, code=code)


def test_consecutive_failures_open_a_cooldown_then_one_probe_closes_it() -> None:
    health = RouteHealth(CooldownConfig(failures=3, duration=10))
    health.sharing = True
    for _ in range(2):
        health.failure("p/m", _error(503))
    assert health.cooling("p/m") is None
    health.failure("p/m", _error(503))
    reason, left = health.cooling("p/m")
    assert reason == FAILING and 9 < left <= 10
    assert health.changes[-1][0] == "p/m"
    later = health.until("p/m") + 0.1
    assert health.cooling("p/m", now=later) is None  # the first caller after it probes...
    assert health.cooling("p/m", now=later) is not None  # ...and the others wait for its answer
    health.success("p/m")
    assert health.cooling("p/m") is None and not health.is_cooling("p/m")


def test_a_failed_probe_doubles_the_cooldown() -> None:
    health = RouteHealth(CooldownConfig(failures=1, duration=10, max_duration=15))
    health.failure("p/m", _error(500))
    first = health.until("p/m")
    assert health.cooling("p/m", now=first + 0.1) is None  # probe
    health.failure("p/m", _error(500))
    assert 14 < health.until("p/m") - time.time() <= 15  # doubled, capped at max_duration


def test_the_requests_own_faults_do_not_count() -> None:
    health = RouteHealth(CooldownConfig(failures=1))
    health.failure("p/m", _error(400))
    health.failure("p/m", _error(422))
    health.failure("p/m", _error(400, code="context_length_exceeded"))
    health.failure("p/m", _error(499))
    assert not health.is_cooling("p/m")


def test_retry_after_cools_the_route_for_that_long() -> None:
    health = RouteHealth(CooldownConfig(failures=10))
    health.failure("p/m", _error(429, retry_after=42))
    reason, left = health.cooling("p/m")
    assert reason == RATE_LIMITED and 41 < left <= 42


def test_error_rate_over_the_window_opens_a_cooldown() -> None:
    health = RouteHealth(CooldownConfig(failures=100, error_rate=0.5, min_requests=10, window=60))
    for n in range(10):
        if n % 2:
            health.failure("p/m", _error(502))
        else:
            health.success("p/m")
    assert health.is_cooling("p/m")


def test_cooldowns_from_other_replicas_apply_and_disabled_means_never() -> None:
    health = RouteHealth(CooldownConfig())
    health.apply_remote("p/m", time.time() + 5, RATE_LIMITED)
    assert health.cooling("p/m")[0] == RATE_LIMITED
    off = RouteHealth(CooldownConfig(enabled=False))
    for _ in range(10):
        off.failure("p/m", _error(503))
    assert off.cooling("p/m") is None


def test_a_route_failing_as_the_last_resort_for_long_never_overflows() -> None:
    # A dead single-route model is tried as the last resort by every request and reopens its
    # cooldown every `failures` failures: the doubling must stay a number (2**1024 did not).
    health = RouteHealth(CooldownConfig(failures=1, duration=30.0, max_duration=300.0))  # floats, as decoded
    for _ in range(1100):
        health.failure("p/m", _error(503))
    assert 299 < health.until("p/m") - time.time() <= 300


def test_a_huge_retry_after_cools_the_route_at_most_max_duration() -> None:
    health = RouteHealth(CooldownConfig(max_duration=300))
    health.failure("p/m", _error(429, retry_after=86_400))
    reason, left = health.cooling("p/m")
    assert reason == RATE_LIMITED and 299 < left <= 300  # then probed, like any cooldown
    health.apply_remote("p/x", time.time() + 1e12, RATE_LIMITED)  # from a replica: bounded too
    assert health.until("p/x") - time.time() <= 300


def test_route_health_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ad-hoc `provider/any-model` routes make labels from client input.
    monkeypatch.setattr("sluice.routing.health.MAX_ROUTES", 8)
    health = RouteHealth(CooldownConfig())
    for n in range(100):
        health.success(f"p/m{n}")
        health.failure(f"p/f{n}", _error(503))
        health.apply_remote(f"p/r{n}", time.time() + 5, FAILING)
    assert len(health._routes) <= 8


def _probing(duration: float = 0.05) -> tuple[LivePolicy, Route]:
    live = LiveRouting(RoutingConfig(cooldown=CooldownConfig(failures=1, duration=duration),
                                     affinity=AffinityConfig(enabled=False)))
    route = _route("one")
    live.health.failure(route.label, _error(503))
    time.sleep(duration + 0.01)  # the cooldown is over: the next caller probes
    return LivePolicy(DefaultPolicy(live.config), live), route


def test_an_abandoned_probe_is_handed_on_to_the_next_request() -> None:
    policy, route = _probing()
    prober = _ctx({})
    assert policy.before_attempt(prober, route) is None  # the probe
    assert policy.before_attempt(_ctx({}), route) is not None  # the others wait for its answer
    prober.attempts.append(Attempt(route, time.monotonic()))
    # The client leaves while the probe runs (a stream cut, a cancelled request).
    Pipeline.abandon(SimpleNamespace(policy=policy, hooks=[]), prober)  # type: ignore[arg-type]
    assert policy.before_attempt(_ctx({}), route) is None  # the next request probes at once


def test_a_probe_failing_for_the_requests_own_fault_is_handed_on() -> None:
    policy, route = _probing()
    prober = _ctx({})
    assert policy.before_attempt(prober, route) is None
    attempt = Attempt(route, time.monotonic())
    attempt.fail(_error(400), time.monotonic())
    policy.after_attempt(prober, attempt)
    assert policy.before_attempt(_ctx({}), route) is None


def test_a_probe_the_inner_policy_skips_is_handed_on() -> None:
    policy, route = _probing()
    policy.inner = SimpleNamespace(before_attempt=lambda ctx, route: SKIPPED)  # type: ignore[assignment]
    assert policy.before_attempt(_ctx({}), route) is SKIPPED  # never called: it probed nothing
    policy.inner = DefaultPolicy(policy.live.config)
    assert policy.before_attempt(_ctx({}), route) is None


def test_a_bug_in_what_routing_learns_never_fails_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    live = LiveRouting(RoutingConfig())
    policy = LivePolicy(DefaultPolicy(live.config), live)

    def broken(*args: Any, **kw: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(live.metrics, "record", broken)
    monkeypatch.setattr(live.affinity, "key", broken)
    ctx = _ctx({"prompt_cache_key": "k"})
    routes = [_route("one"), _route("two")]
    assert policy.order(ctx, routes) == routes
    attempt = Attempt(routes[0], time.monotonic())
    attempt.succeed(time.monotonic())
    policy.after_attempt(ctx, attempt)  # does not raise


# --- through a gateway -------------------------------------------------------------------------

CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
routing: {{retries: 0, cooldown: {{failures: 2, duration: 30}}}}
providers:
  one: {{type: openai, base_url: "{upstream}/v1", api_key: sk-upstream-one-0000}}
  two: {{type: openai, base_url: "{upstream}/v1", api_key: sk-upstream-two-0000}}
models:
  duo:
    routes:
      - {{provider: one, model: duo-1, price: {{input: 1.0, output: 1.0}}}}
      - {{provider: two, model: duo-2, price: {{input: 3.0, output: 1.0, cached_input: 0.1}}}}
"""


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayServer]:
    with ReplayServer() as server:
        yield server


@pytest.fixture(scope="module")
def gw(replay: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = Path(tmp_path_factory.mktemp("affinity-db")) / "sluice.db"
    with running_gateway(CONFIG.format(db=db, master=MASTER_KEY, upstream=replay.url)) as gateway:
        yield gateway


@pytest.fixture
def client(gw: RunningGateway, replay: ReplayServer) -> openai.OpenAI:
    replay.reset()
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)


def _failure(status: int = 503) -> Exchange:
    return Exchange(method="POST", path="/", request_body=None, status=status,
                    headers={"content-type": "application/json"}, stream=False, source="synthetic",
                    body=b'{"error": {"message": "overloaded", "type": "server_error"}}')


def _answer(cached: int = 0, created: int = 0) -> Exchange:
    body = json.loads(ANSWER.body)
    body["usage"]["input_tokens"] = 10_000
    body["usage"]["input_tokens_details"] = {"cached_tokens": cached, "cache_write_tokens": created}
    return dataclasses.replace(ANSWER, body=json.dumps(body).encode())


def _served(replay: ReplayServer) -> list[str]:
    return [request.json["model"] for request in replay.requests]


def test_a_conversation_sticks_to_the_route_holding_its_cache(client: openai.OpenAI, replay: ReplayServer) -> None:
    replay.enqueue(_failure())
    replay.enqueue(ANSWER)
    first = client.responses.create(model="duo", input="hi", extra_body={"prompt_cache_key": "conv-1"})
    assert first.model == "two/duo-2" and _served(replay) == ["duo-1", "duo-2"]
    replay.requests.clear()
    replay.enqueue(ANSWER)
    # Route one is healthy again, but two holds conv-1's cache: two goes first.
    again = client.responses.create(model="duo", input="and then?", extra_body={"prompt_cache_key": "conv-1"})
    assert again.model == "two/duo-2" and _served(replay) == ["duo-2"]
    trace = again.model_dump()["routing"]
    assert trace["strategy"] == "affinity" and trace["sort"] is None
    replay.requests.clear()
    replay.enqueue(ANSWER)
    other = client.responses.create(model="duo", input="hi", extra_body={"prompt_cache_key": "conv-2"})
    assert other.model == "one/duo-1" and _served(replay) == ["duo-1"]
    assert other.model_dump()["routing"]["strategy"] == "ordered"


def test_the_same_instructions_stick_without_a_prompt_cache_key(client: openai.OpenAI, replay: ReplayServer) -> None:
    replay.enqueue(_failure())
    replay.enqueue(ANSWER)
    assert client.responses.create(model="duo", instructions="You are a pirate.", input="a").model == "two/duo-2"
    replay.enqueue(ANSWER)
    assert client.responses.create(model="duo", instructions="You are a pirate.", input="b").model == "two/duo-2"
    replay.enqueue(ANSWER)
    assert client.responses.create(model="duo", instructions="You are a poet.", input="c").model == "one/duo-1"


def test_a_cost_sort_counts_the_price_of_losing_a_warm_cache(client: openai.OpenAI, replay: ReplayServer) -> None:
    long_prompt = "word " * 8_000  # ~10,000 tokens by the gateway's estimate
    cost = {"routing": {"model": {"sort": "cost"}}, "max_output_tokens": 16}
    replay.enqueue(_failure())
    replay.enqueue(_answer(cached=0, created=9_000))
    warmed = client.responses.create(model="duo", input=long_prompt, extra_body={"prompt_cache_key": "big", **cost})
    assert warmed.model == "two/duo-2"  # one is cheaper cold, but failed
    replay.enqueue(_answer(cached=9_000))
    # Cold, one is cheaper (1.0 against 3.0 per token); warm, two reads 9,000 tokens at 0.1.
    assert client.responses.create(model="duo", input=long_prompt,
                                   extra_body={"prompt_cache_key": "big", **cost}).model == "two/duo-2"
    replay.enqueue(ANSWER)
    assert client.responses.create(model="duo", input=long_prompt,
                                   extra_body={"prompt_cache_key": "cold", **cost}).model == "one/duo-1"


def test_a_cooling_route_is_passed_over_and_named_in_the_trace(client: openai.OpenAI, replay: ReplayServer) -> None:
    for _ in range(2):  # cooldown.failures: 2
        replay.enqueue(_failure())
        replay.enqueue(ANSWER)
        assert client.responses.create(model="duo", input="hi").model == "two/duo-2"
    replay.requests.clear()
    replay.enqueue(ANSWER)
    response = client.responses.create(model="duo", input="hi")
    attempts = response.model_dump()["routing"]["attempts"]
    assert [(a["provider"], a["outcome"], a["error_code"]) for a in attempts] == [
        ("one", "cooldown", "route_cooldown"), ("two", "ok", None)]
    assert _served(replay) == ["duo-2"]  # one was not called


def test_when_every_route_cools_the_soonest_back_is_tried(client: openai.OpenAI, replay: ReplayServer) -> None:
    for _ in range(2):
        replay.enqueue(_failure())
        replay.enqueue(_failure())
        with pytest.raises(openai.APIStatusError):
            client.responses.create(model="duo", input="hi")
    replay.requests.clear()
    replay.enqueue(ANSWER)
    # Both routes are out of rotation; refusing would leave the client with nothing for 30 s.
    response = client.responses.create(model="duo", input="hi")
    assert response.status == "completed" and len(replay.requests) == 1


def test_nothing_piles_up_for_sharing_when_nothing_shares() -> None:
    affinity, health = Affinity(AffinityConfig()), RouteHealth(CooldownConfig(failures=1))
    ctx = _ctx({"prompt_cache_key": "conv-1"})
    ctx.routing["affinity"] = affinity.key(ctx)
    for _ in range(3):
        affinity.served(ctx, _route("one"), {"input_tokens_details": {}})
        health.failure("p/m", _error(503))
    assert affinity.changes == [] and health.changes == []
    assert affinity.lookup(ctx.routing["affinity"]) is not None and health.is_cooling("p/m")
