"""Routing (docs/routing.md): candidates, provider fallbacks and aliases, context windows, sorts
by cost and rank, and `model: "auto"` — the order through `plan()`, the behaviour through the
gateway with the official SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from sluice.canonical.request import parse_request
from sluice.config import parse_config
from sluice.errors import InvalidRequest
from sluice.routing.catalog import build_catalog
from sluice.routing.metrics import RouteMetrics
from sluice.routing.router import plan
from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.replay.recordings import Exchange, fixtures_root, load
from tests.replay.server import ReplayServer

FIX = fixtures_root()
ANSWER = FIX / "openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml"

CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
routing: {{{routing}}}
providers:
  my-openai: {{type: openai, base_url: "{upstream}/v1", api_key: sk-upstream-0000}}
  openai-eu: {{type: openai, base_url: "{upstream}/v1", api_key: sk-upstream-0001}}
  my-anthropic: {{type: anthropic, base_url: "{upstream}", api_key: sk-ant-upstream-0000}}
  my-bedrock: {{type: bedrock, base_url: "{upstream}", region: us-east-1, api_key: bedrock-0000}}
  grok-proxy: {{type: openai-chat, base_url: "{upstream}/v1", api_key: xai-0000}}
models:
  big:
    context_window: 100000
    rank: 1
    routes:
      - {{provider: my-openai, model: big-1, price: {{input: 10.0, output: 40.0}}}}
      - {{provider: openai-eu, model: big-1, price: {{input: 2.0, output: 8.0}}, rank: 2}}
      - {{provider: my-bedrock, model: big-b, price: {{input: 5.0, output: 20.0}}, rank: 1}}
  small:
    context_window: 1000
    rank: 3
    routes:
      - {{provider: my-openai, model: small-1, price: {{input: 0.1, output: 0.4}}}}
  mid:
    context_window: 8000
    rank: 2
    capabilities: [tools]
    routes:
      - {{provider: my-anthropic, model: mid-1, price: {{input: 1.0, output: 5.0}}}}
      - {{provider: grok-proxy, model: mid-x}}
  unpriced:
    context_window: 2000
    routes:
      - {{provider: grok-proxy, model: free-1}}
"""


def catalog_and_config(routing: str = ""):
    config = parse_config(CONFIG.format(db="/tmp/unused.db", master=MASTER_KEY, upstream="http://127.0.0.1:9",
                                        routing=routing))
    return build_catalog(config, environ={}), config.routing


def labels(body: dict, routing: str = "") -> list[str]:
    catalog, config = catalog_and_config(routing)
    return [route.label for route in plan(parse_request(json.dumps(body).encode()), catalog, config)]


def refusal(body: dict, routing: str = "") -> InvalidRequest:
    catalog, config = catalog_and_config(routing)
    with pytest.raises(InvalidRequest) as caught:
        plan(parse_request(json.dumps(body).encode()), catalog, config)
    return caught.value


# --- candidates ----------------------------------------------------------------------------------

def test_default_order_is_config_order() -> None:
    assert labels({"model": "big", "input": "hi"}) == ["my-openai/big-1", "openai-eu/big-1", "my-bedrock/big-b"]
    assert labels({"model": "big", "input": "hi", "routing": {"model": {"fallbacks": ["mid"]}}}) == [
        "my-openai/big-1", "openai-eu/big-1", "my-bedrock/big-b", "my-anthropic/mid-1", "grok-proxy/mid-x"]


def test_provider_fallbacks_restrict_and_order_the_later_routes() -> None:
    body = {"model": "big", "input": "hi", "routing": {
        "model": {"fallbacks": ["mid"]}, "provider": {"fallbacks": ["aws", "grok-proxy"]}}}
    assert labels(body) == ["my-openai/big-1", "my-bedrock/big-b", "grok-proxy/mid-x"]


def test_provider_aliases_map_to_configured_providers() -> None:
    # openai (by wire type: both openai providers), amazon -> bedrock, grok -> a provider named grok-*.
    body = {"model": "mid", "input": "hi", "routing": {
        "model": {"fallbacks": ["big", "unpriced"]}, "provider": {"fallbacks": ["grok", "oai", "amazon"]}}}
    assert labels(body) == ["my-anthropic/mid-1", "grok-proxy/mid-x", "grok-proxy/free-1", "my-openai/big-1",
                            "openai-eu/big-1", "my-bedrock/big-b"]
    body["routing"]["provider"]["fallbacks"] = ["anthropic-ai"]
    assert labels(body) == ["my-anthropic/mid-1"]


def test_unknown_provider_fallback_is_a_400_naming_it() -> None:
    body = {"model": "big", "input": "hi", "routing": {"provider": {"fallbacks": ["aws", "cohere"]}}}
    error = refusal(body)
    assert error.param == "routing.provider.fallbacks[1]"
    assert "cohere" in str(error)


def test_pinned_provider_stays_first_under_a_sort() -> None:
    body = {"model": "my-openai/big", "input": "hi", "routing": {"provider": {"sort": "cost"}}}
    assert labels(body) == ["my-openai/big-1", "openai-eu/big-1", "my-bedrock/big-b"]
    body = {"model": "my-bedrock/big", "input": "hi"}
    assert labels(body) == ["my-bedrock/big-b", "my-openai/big-1", "openai-eu/big-1"]


def test_routes_whose_context_window_is_too_small_are_skipped() -> None:
    text = "x" * 4000 * 4  # about 4,000 tokens
    body = {"model": "small", "input": text, "routing": {"model": {"fallbacks": ["mid", "big"]}}}
    assert labels(body) == ["my-anthropic/mid-1", "grok-proxy/mid-x", "my-openai/big-1", "openai-eu/big-1",
                            "my-bedrock/big-b"]
    body["max_output_tokens"] = 5000  # 9,000 tokens: past mid's 8,000
    assert labels(body)[0] == "my-openai/big-1"


def test_no_route_with_a_large_enough_window_is_a_400() -> None:
    body = {"model": "small", "input": "x" * 8000, "routing": {"model": {"fallbacks": ["mid"]}},
            "max_output_tokens": 7000}
    error = refusal(body)
    assert (error.param, error.code) == ("input", "context_length_exceeded")
    assert "8000" in str(error)


def test_single_route_without_routing_does_no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    import sluice.routing.router as router
    monkeypatch.setattr(router, "estimate_usage", lambda *a: pytest.fail("estimated"))
    assert labels({"model": "small", "input": "x" * 100_000}) == ["my-openai/small-1"]


# --- sort ------------------------------------------------------------------------------------------

def test_sort_cost_is_cheapest_first_unpriced_last() -> None:
    body = {"model": "big", "input": "hi", "routing": {"model": {"fallbacks": ["unpriced", "mid"], "sort": "cost"}}}
    assert labels(body) == ["my-anthropic/mid-1", "openai-eu/big-1", "my-bedrock/big-b", "my-openai/big-1",
                            "grok-proxy/free-1", "grok-proxy/mid-x"]


def test_sort_cost_weighs_input_against_output() -> None:
    # route A: cheap input, dear output; route B: the opposite. The request decides.
    config = CONFIG.replace("  unpriced:", """  pair:
    routes:
      - {{provider: my-openai, model: a, price: {{input: 1.0, output: 100.0}}}}
      - {{provider: openai-eu, model: b, price: {{input: 20.0, output: 1.0}}}}
  unpriced:""")
    catalog = build_catalog(parse_config(config.format(db="/tmp/u.db", master=MASTER_KEY, upstream="http://h",
                                                       routing="")), environ={})

    def order(body: dict) -> list[str]:
        body = {"model": "pair", "routing": {"provider": {"sort": "cost"}}, **body}
        return [r.label for r in plan(parse_request(json.dumps(body).encode()), catalog)]

    assert order({"input": "x" * 40_000, "max_output_tokens": 10}) == ["my-openai/a", "openai-eu/b"]
    assert order({"input": "hi"}) == ["openai-eu/b", "my-openai/a"]  # 1,000 output tokens assumed


def test_sort_performance_by_rank_unranked_last() -> None:
    body = {"model": "unpriced", "input": "hi", "routing": {"model": {"fallbacks": ["small", "big", "mid"],
                                                                      "sort": "performance"}}}
    # big (1): routes by their own rank (bedrock 1, eu 2), then the unranked route; mid (2); small (3).
    assert labels(body) == ["my-bedrock/big-b", "openai-eu/big-1", "my-openai/big-1", "my-anthropic/mid-1",
                            "grok-proxy/mid-x", "my-openai/small-1", "grok-proxy/free-1"]


def test_provider_sort_orders_within_a_model_only() -> None:
    body = {"model": "big", "input": "hi", "routing": {"model": {"fallbacks": ["small"]},
                                                       "provider": {"sort": "cost"}}}
    assert labels(body) == ["openai-eu/big-1", "my-bedrock/big-b", "my-openai/big-1", "my-openai/small-1"]
    # model.sort orders across every route; provider.sort breaks its ties.
    body["routing"]["model"]["sort"] = "performance"
    body["routing"]["model"]["fallbacks"] = ["mid"]
    assert labels(body) == ["my-bedrock/big-b", "openai-eu/big-1", "my-openai/big-1", "my-anthropic/mid-1",
                            "grok-proxy/mid-x"]


def test_config_sort_default_and_live_metric_sorts_without_metrics_keep_config_order() -> None:
    assert labels({"model": "big", "input": "hi"}, routing="sort: cost") == [
        "openai-eu/big-1", "my-bedrock/big-b", "my-openai/big-1"]
    body = {"model": "big", "input": "hi", "routing": {"provider": {"sort": "p90_latency"}}}
    assert labels(body) == ["my-openai/big-1", "openai-eu/big-1", "my-bedrock/big-b"]


# --- live-metric sorts (routing/metrics.py) -----------------------------------------------------------

def measured(*routes: tuple[str, float], failures: tuple[str, ...] = (), ago: float = 0.0) -> RouteMetrics:
    """Metrics where each (label, seconds) route served 3 requests with that time to first token."""
    metrics = RouteMetrics(cache_ttl=0)
    now = time.time() - ago
    for label, seconds in routes:
        for _ in range(3):
            metrics.record(label, ok=True, latency=seconds * 2, ttft=seconds, output_tokens=int(100 + seconds * 1000),
                           input_tokens=10, now=now)
    for label in failures:
        metrics.record(label, ok=False, latency=0.01, ttft=None, output_tokens=None, now=now)
    return metrics


def live_labels(body: dict, metrics: RouteMetrics, routing: str = "explore: 0") -> list[str]:
    catalog, config = catalog_and_config(routing)
    return [route.label for route in plan(parse_request(json.dumps(body).encode()), catalog, config,
                                          metrics=metrics)]


def sorted_by(sort: str, level: str = "provider", **more: object) -> dict:
    return {"model": "big", "input": "hi", "routing": {level: {"sort": sort, **more}}}


def test_live_sorts_lower_latency_first_higher_uptime_and_throughput_first() -> None:
    metrics = measured(("my-openai/big-1", 0.3), ("openai-eu/big-1", 0.1), ("my-bedrock/big-b", 0.2))
    for sort in ("p50_latency", "avg_latency", "min_latency", "max_latency", "p99_e2e_latency", "avg_e2e_latency",
                 "p0_latency", "p100_latency"):
        assert live_labels(sorted_by(sort), metrics) == ["openai-eu/big-1", "my-bedrock/big-b", "my-openai/big-1"]
    # Throughput (tokens / generation second): 1,100 / s for openai-eu, 600 for bedrock, 433 for my-openai.
    assert live_labels(sorted_by("throughput"), metrics) == ["openai-eu/big-1", "my-bedrock/big-b", "my-openai/big-1"]
    # Token averages: fewer first.
    assert live_labels(sorted_by("output_tokens"), metrics) == ["openai-eu/big-1", "my-bedrock/big-b",
                                                                "my-openai/big-1"]
    metrics.record("my-bedrock/big-b", ok=False, latency=0.01, ttft=None, output_tokens=None)
    assert live_labels(sorted_by("uptime"), metrics) == ["my-openai/big-1", "openai-eu/big-1", "my-bedrock/big-b"]
    # More requests: more proven.
    assert live_labels(sorted_by("total_requests"), metrics)[0] == "my-bedrock/big-b"


def test_unmeasured_routes_follow_in_config_order_and_failing_ones_last() -> None:
    metrics = measured(("my-bedrock/big-b", 0.2), failures=("my-openai/big-1",))
    # bedrock measured; openai-eu has no data; my-openai only failed (no latency to sort on).
    assert live_labels(sorted_by("p50_latency"), metrics) == ["my-bedrock/big-b", "openai-eu/big-1",
                                                              "my-openai/big-1"]
    assert live_labels(sorted_by("p50_latency"), RouteMetrics()) == ["my-openai/big-1", "openai-eu/big-1",
                                                                     "my-bedrock/big-b"]


def test_unmeasured_routes_are_explored(monkeypatch: pytest.MonkeyPatch) -> None:
    import sluice.routing.router as router
    metrics = measured(("my-openai/big-1", 0.1))
    body = sorted_by("p50_latency")
    seen = {tuple(live_labels(body, metrics, routing="explore: 0.5")) for _ in range(200)}
    # Half the time an unmeasured route (at random) goes first; otherwise the measured one.
    assert {order[0] for order in seen} == {"my-openai/big-1", "openai-eu/big-1", "my-bedrock/big-b"}
    assert all(order[0] != "my-openai/big-1" or order[1:] == ("openai-eu/big-1", "my-bedrock/big-b")
               for order in seen)
    # The draw: explore is the share of requests that try an unmeasured route first.
    draws = iter([0.049, 0.051])
    monkeypatch.setattr(router.random, "random", lambda: next(draws))
    monkeypatch.setattr(router.random, "choice", lambda options: options[-1])
    assert live_labels(body, metrics, routing="explore: 0.05")[0] == "my-bedrock/big-b"
    assert live_labels(body, metrics, routing="explore: 0.05")[0] == "my-openai/big-1"
    # Nothing to explore once every route is measured; a pinned provider stays first.
    everything = measured(("my-openai/big-1", 0.3), ("openai-eu/big-1", 0.1), ("my-bedrock/big-b", 0.2))
    monkeypatch.setattr(router.random, "random", lambda: 0.0)
    assert live_labels(body, everything, routing="explore: 1")[0] == "openai-eu/big-1"
    pinned = {**body, "model": "my-openai/big"}
    assert live_labels(pinned, metrics, routing="explore: 1") == ["my-openai/big-1", "my-bedrock/big-b",
                                                                  "openai-eu/big-1"]


def test_model_sort_by_a_live_metric_orders_across_models() -> None:
    metrics = measured(("my-openai/big-1", 0.3), ("openai-eu/big-1", 0.1), ("my-bedrock/big-b", 0.2),
                       ("my-anthropic/mid-1", 0.05))
    body = {"model": "big", "input": "hi", "routing": {"model": {"fallbacks": ["mid"], "sort": "p90_latency"}}}
    assert live_labels(body, metrics) == ["my-anthropic/mid-1", "openai-eu/big-1", "my-bedrock/big-b",
                                          "my-openai/big-1", "grok-proxy/mid-x"]
    # provider.sort alone orders within each model: the requested model stays first.
    body["routing"] = {"model": {"fallbacks": ["mid"]}, "provider": {"sort": "p90_latency"}}
    assert live_labels(body, metrics) == ["openai-eu/big-1", "my-bedrock/big-b", "my-openai/big-1",
                                          "my-anthropic/mid-1", "grok-proxy/mid-x"]
    # The config's default sort is the request's when it names none.
    assert live_labels({"model": "big", "input": "hi"}, metrics, routing="sort: p50_latency, explore: 0")[0] == \
        "openai-eu/big-1"


def test_interval_is_the_requests_else_the_configs() -> None:
    metrics = measured(("my-bedrock/big-b", 0.2), ("openai-eu/big-1", 0.1), ago=1800)  # half an hour ago
    metrics.record("my-openai/big-1", ok=True, latency=1.0, ttft=0.5, output_tokens=1)
    # The default 15 minutes only see my-openai; an hour sees them all.
    assert live_labels(sorted_by("p50_latency"), metrics)[0] == "my-openai/big-1"
    assert live_labels(sorted_by("p50_latency", interval="1h"), metrics)[0] == "openai-eu/big-1"
    assert live_labels(sorted_by("p50_latency"), metrics, routing="interval: 1 hour, explore: 0")[0] == \
        "openai-eu/big-1"


def test_no_routing_single_route_reads_no_metrics() -> None:
    class Untouchable(RouteMetrics):
        def value(self, *args: object, **kwargs: object) -> float | None:
            raise AssertionError("metrics read on the fast path")

    assert live_labels({"model": "small", "input": "hi"}, Untouchable()) == ["my-openai/small-1"]
    assert live_labels({"model": "big", "input": "hi"}, Untouchable()) == [
        "my-openai/big-1", "openai-eu/big-1", "my-bedrock/big-b"]  # several routes, no sort: none either


def test_cost_sort_estimates_output_from_the_routes_recent_average() -> None:
    config = CONFIG.replace("  unpriced:", """  pair:
    routes:
      - {{provider: my-openai, model: a, price: {{input: 1.0, output: 100.0}}}}
      - {{provider: openai-eu, model: b, price: {{input: 20.0, output: 1.0}}}}
  unpriced:""")
    catalog = build_catalog(parse_config(config.format(db="/tmp/u.db", master=MASTER_KEY, upstream="http://h",
                                                       routing="")), environ={})
    metrics = RouteMetrics(cache_ttl=0)
    for _ in range(5):  # route a answers in about 4 tokens
        metrics.record("my-openai/a", ok=True, latency=0.5, ttft=0.1, output_tokens=4, input_tokens=10)

    def order(body: dict, with_metrics: RouteMetrics | None = metrics) -> list[str]:
        body = {"model": "pair", "routing": {"provider": {"sort": "cost"}}, **body}
        return [r.label for r in plan(parse_request(json.dumps(body).encode()), catalog, metrics=with_metrics)]

    # "hi": a costs 1 + 4 * 100 (its recent average), b 20 + 1,000 * 1 (no data: the default).
    assert order({"input": "hi"}) == ["my-openai/a", "openai-eu/b"]
    assert order({"input": "hi"}, with_metrics=None) == ["openai-eu/b", "my-openai/a"]
    # max_output_tokens, when given, is the estimate.
    assert order({"input": "hi", "max_output_tokens": 500}) == ["openai-eu/b", "my-openai/a"]


# --- auto ----------------------------------------------------------------------------------------

def test_auto_cheapest_and_by_rank() -> None:
    assert labels({"model": "auto", "input": "hi"})[:2] == ["my-openai/small-1", "my-anthropic/mid-1"]
    assert labels({"model": "auto", "input": "hi"}, routing="auto: performance")[0] == "my-bedrock/big-b"
    # Capabilities and the context window narrow the choice.
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}]
    assert labels({"model": "auto", "input": "x" * 20_000, "tools": tools}) == [
        "my-anthropic/mid-1", "openai-eu/big-1", "my-bedrock/big-b", "my-openai/big-1", "grok-proxy/mid-x"]


def test_auto_nothing_fits_is_a_400() -> None:
    error = refusal({"model": "auto", "input": "x" * 400_004, "max_output_tokens": 1})
    assert (error.param, error.code) == ("input", "context_length_exceeded")


# --- through the gateway, with the official SDK -----------------------------------------------------

@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayServer]:
    with ReplayServer() as server:
        yield server


@pytest.fixture(scope="module")
def routed(replay: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = Path(tmp_path_factory.mktemp("routing-db")) / "sluice.db"
    with running_gateway(CONFIG.format(db=db, master=MASTER_KEY, upstream=replay.url, routing="")) as gateway:
        yield gateway


@pytest.fixture
def client(routed: RunningGateway, replay: ReplayServer) -> openai.OpenAI:
    replay.requests.clear()
    return openai.OpenAI(base_url=f"{routed.url}/v1", api_key=MASTER_KEY, max_retries=0)


def _overloaded() -> Exchange:
    return Exchange(method="POST", path="/", request_body=None, status=503,
                    headers={"content-type": "application/json"}, stream=False, source="synthetic",
                    body=b'{"error": {"message": "overloaded", "type": "server_error"}}')


def test_sdk_sort_cost_serves_the_cheapest_route(client: openai.OpenAI, replay: ReplayServer) -> None:
    replay.enqueue(load(ANSWER)[0])
    response = client.responses.create(model="big", input="hi", extra_body={"routing": {"provider": {"sort": "cost"}}})
    assert response.model == "openai-eu/big-1"
    trace = response.model_dump()["routing"]
    assert (trace["sort"], trace["strategy"]) == ("cost", "sorted")
    assert replay.requests[-1].json["model"] == "big-1"


def test_sdk_provider_fallbacks_after_a_failure(client: openai.OpenAI, replay: ReplayServer) -> None:
    replay.enqueue([_overloaded()] * 2)  # the first route is retried once (routing.retries), then left
    replay.enqueue(load(ANSWER)[0])
    response = client.responses.create(model="big", input="hi", extra_body={"routing": {
        "model": {"fallbacks": ["small"]}, "provider": {"fallbacks": ["my-openai"]}}})
    # openai-eu and my-bedrock are left out: the fallback is small on my-openai.
    assert response.model == "my-openai/small-1"
    assert [r.json["model"] for r in replay.requests] == ["big-1", "big-1", "small-1"]


def test_sdk_auto_names_the_serving_route(client: openai.OpenAI, replay: ReplayServer) -> None:
    replay.enqueue(load(ANSWER)[0])
    # max_output_tokens: routes that served earlier tests have a recent average output (5 tokens)
    # that makes them cheap; the default estimate is this request's.
    response = client.responses.create(model="auto", input="hi", max_output_tokens=500)
    assert response.model == "my-openai/small-1"
    assert response.model_dump()["routing"]["strategy"] == "auto"


def test_sdk_errors_name_the_param(client: openai.OpenAI, routed: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="big", input="hi",
                                extra_body={"routing": {"provider": {"fallbacks": ["nowhere"]}}})
    assert caught.value.body["param"] == "routing.provider.fallbacks[0]"
    resp = httpx.post(f"{routed.url}/v1/responses", headers={"authorization": f"Bearer {MASTER_KEY}"},
                      json={"model": "small", "input": "x" * 8000, "max_output_tokens": 1000,
                            "routing": {"model": {"fallbacks": ["small"]}}}, timeout=10)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "context_length_exceeded"


def test_pinned_route_that_cannot_serve_is_skipped_and_the_sort_applies() -> None:
    config = CONFIG.replace("model: big-b, price: {{input: 5.0, output: 20.0}}, rank: 1",
                            "model: big-b, price: {{input: 5.0, output: 20.0}}, rank: 1, capabilities: []")
    catalog = build_catalog(parse_config(config.format(db="/tmp/u.db", master=MASTER_KEY, upstream="http://h",
                                                       routing="")), environ={})
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}]
    body = {"model": "my-bedrock/big", "input": "hi", "routing": {"provider": {"sort": "cost"}}}
    order = [r.label for r in plan(parse_request(json.dumps(body).encode()), catalog)]
    assert order == ["my-bedrock/big-b", "openai-eu/big-1", "my-openai/big-1"]
    order = [r.label for r in plan(parse_request(json.dumps({**body, "tools": tools}).encode()), catalog)]
    assert order == ["openai-eu/big-1", "my-openai/big-1"]


def test_config_sort_interval_and_auto_are_validated() -> None:
    from sluice.config import ConfigError
    # The request's own vocabulary: a bare "latency" is not a sort there either.
    for bad in ("sort: latency", "sort: p101_latency", "auto: fastest", "interval: 15s", "interval: soon",
                "explore: 1.5"):
        with pytest.raises(ConfigError):
            catalog_and_config(bad)
    assert catalog_and_config("sort: performance, auto: performance")[1].auto == "performance"
    config = catalog_and_config("sort: p90_e2e_latency, interval: 24 hours")[1]
    assert (config.sort, config.interval) == ("p90_e2e_latency", "24 hours")


def test_sdk_stream_refused_before_it_starts_when_nothing_fits(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="auto", input="x" * 500_000, stream=True)
    assert caught.value.body["code"] == "context_length_exceeded"
    assert caught.value.body["param"] == "input"


def test_sdk_stream_auto_served_by_the_cheapest(client: openai.OpenAI, replay: ReplayServer) -> None:
    replay.enqueue(load(FIX / "openai-responses/simonw-llm/test_responses_basic_streaming.yaml")[0])
    with client.responses.stream(model="auto", input="hi", max_output_tokens=500) as stream:  # as above
        final = stream.get_final_response()
    assert final.model == "my-openai/small-1"
    assert replay.requests[-1].json["model"] == "small-1"
