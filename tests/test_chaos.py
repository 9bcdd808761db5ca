"""Chaos (issue 9): every upstream type failing on purpose, streamed and not, in front of a real gateway.

A local upstream (`tests/chaos_upstream.py`) speaks the five wire protocols with real recorded
answers and fails on purpose per route: HTTP 500/503/529, 429 with `Retry-After`, a refused
connection, a reset, a first byte that never comes, garbage, a stream cut / ended / broken by the
protocol's own error before or after content, a silence after content, a flaky route. Each model
`<type>--<failure>` has the failing route first and a healthy route of the same type second.

For each case the tests check what the client receives (through the official `openai` SDK for
whole answers, raw SSE checked against the SDK's event types for streams), which candidates were
tried in which order (the response's routing trace, and the requests the upstream received), and
that nothing hangs (every request bounded: the client's timeout, the gateway's timeouts).

- A failure **before content** (any failure of a whole answer, or of a stream before its first
  content) never reaches the client: route 2 answers one clean response, the trace lists route 1
  as "error" (its status, its error code), and a retryable failure is tried twice on route 1
  first (`routing.retries` default 1); a flaky route serves on its retry.
- A failure **after content** (a stream already sent text): the client keeps the text and gets
  `error` + `response.failed`, exactly one terminal event, never a hang or a silent end.
- **Every route fails**: all rate limited -> 429 with `Retry-After`; otherwise 424 with the last
  provider's message (a provider's 401/403/404 too: the client's key is fine).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from tests.chaos_upstream import (
    KINDS,
    MESSAGES,
    RECORDINGS,
    RETRY_AFTER,
    ChaosUpstream,
    providers_yaml,
    upstream_timeouts,
)
from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.sse import assert_well_formed, read_events

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
# The gateway's upstream timeouts (first byte, idle), small so that `slow` and `stall-after` are quick.
TIMEOUT = 0.3
CLIENT_TIMEOUT = 20  # the client's own bound: no test can wait longer for an answer
# What any case but a timeout may take, retries and failover included (each takes milliseconds).
QUICK = 5.0

# Failures whose whole (non-streamed) answer and stream fail before any content reaches the client.
BEFORE = ("fail-500", "fail-503", "fail-529", "fail-429", "fail-401", "fail-403", "fail-404", "refused", "reset",
          "reset-headers", "slow", "garbage", "cut-before", "error-before", "flaky")
# A whole answer has a Content-Length: it cannot end early and cleanly; its silence is stall-after's.
STREAM_ONLY = ("end-before", "stall-before", "error-before-429")
# After content: a stream keeps what it sent; a whole answer broken mid-body is a failure like any other.
AFTER = ("cut-after", "error-after", "stall-after")
# `garbage-after`: the last text arrives in the same read as an event that is not the protocol; that
# text reached the gateway before the garbage and must reach the client too.
STREAM_AFTER = (*AFTER, "end-after", "garbage-after")
# Failures the gateway retries once on the same route (the default `routing.retries: 1`).
RETRIED = frozenset({"fail-500", "fail-503", "fail-529", "refused", "reset", "reset-headers", "slow", "garbage",
                     "cut-before", "end-before", "stall-before", "error-before", "error-before-429", "cut-after",
                     "error-after", "stall-after"})
TIMEOUTS = frozenset({"slow", "stall-before", "stall-after"})
# Error codes the gateway itself gives a failure (provider errors keep the provider's own code).
GATEWAY_CODES = {"refused": "upstream_connection_error", "reset": "upstream_connection_error",
                 "reset-headers": "upstream_connection_error", "garbage": "upstream_invalid_response",
                 "cut-before": "upstream_connection_error", "cut-after": "upstream_connection_error",
                 "end-before": "upstream_empty_stream", "slow": "upstream_timeout", "stall-before": "upstream_timeout",
                 "stall-after": "upstream_timeout"}


def _case_ids(kind: str, failure: str, stream: bool) -> str:
    return f"{kind}-{failure}-{'stream' if stream else 'whole'}"


def _cases(failures: tuple[str, ...], stream: bool) -> list[Any]:
    out = []
    for kind in KINDS:
        for failure in failures:
            if kind == "bedrock" and not stream and failure in ("error-before", "error-after"):
                continue  # Converse reports a whole answer's failure by HTTP status only (fail-5xx)
            out.append(pytest.param(kind, failure, stream, id=_case_ids(kind, failure, stream)))
    return out


FAILOVER_CASES = _cases(BEFORE + AFTER, False) + _cases(BEFORE + STREAM_ONLY, True)
COMMITTED_CASES = _cases(STREAM_AFTER, True)


# --- the gateway ------------------------------------------------------------------------------


def route(kind: str, failure: str) -> str:
    provider = "dead" if failure == "refused" else "c"
    return f"{{provider: {provider}-{kind}, model: {failure}}}"


def model(name: str, *routes: str) -> str:
    return f"  {name}:\n    routes:\n" + "".join(f"      - {r}\n" for r in routes)


def config(db: Any, chaos: ChaosUpstream, routing: str, models: str) -> str:
    return (f"database: sqlite:///{db}\nmaster_key: {MASTER_KEY}\nbuiltin_catalog: false\n"
            f"routing: {routing}\nproviders:\n{providers_yaml(chaos, upstream_timeouts(TIMEOUT, TIMEOUT))}"
            f"models:\n{models}")


# Retries stay at their default (1). A short backoff keeps the suite fast; a Retry-After of 1 s is
# longer than max_retry_wait, so a 429 moves on to the next route at once. Cooldowns and cache
# affinity are off: every test shares these routes, and each must see the config order.
ROUTING = ("{retry_backoff: 0.02, max_retry_wait: 0.5, cooldown: {enabled: false}, affinity: {enabled: false}}")

ALL_FAIL: dict[str, tuple[tuple[tuple[str, str], ...], int, str]] = {
    # model: ((type, failure) of each route, the client's status, text of the last provider's message)
    "all-429": ((("openai", "fail-429"), ("anthropic", "fail-429")), 429, MESSAGES[429]),
    "429-then-503": ((("gemini", "fail-429"), ("bedrock", "fail-503")), 424, MESSAGES[503]),
    "503-then-429": ((("bedrock", "fail-503"), ("gemini", "fail-429")), 424, MESSAGES[429]),
    "5xx-then-refused": ((("openai-chat", "fail-500"), ("anthropic", "fail-529"), ("gemini", "refused")), 424,
                         "The connection to provider 'dead-gemini' failed"),
    "only-401": ((("openai", "fail-401"),), 424, MESSAGES[401]),
    "only-403": ((("anthropic", "fail-403"),), 424, MESSAGES[403]),
    "only-404": ((("gemini", "fail-404"),), 424, MESSAGES[404]),
    "404-then-401": ((("openai-chat", "fail-404"), ("bedrock", "fail-401")), 424, MESSAGES[401]),
    "503-then-403": ((("openai", "fail-503"), ("openai-chat", "fail-403")), 424, MESSAGES[403]),
}


def models() -> str:
    out = [model(f"{kind}--{failure}", route(kind, failure), route(kind, "ok"))
           for kind in KINDS for failure in (*BEFORE, *STREAM_ONLY, *STREAM_AFTER, "fail-400", "flaky-429")]
    out += [model(name, *(route(kind, failure) for kind, failure in routes))
            for name, (routes, _, _) in ALL_FAIL.items()]
    out.append(model("all-429-in-stream", route("openai", "error-before-429"), route("bedrock", "error-before-429")))
    return "".join(out)


@pytest.fixture(scope="module")
def chaos() -> Iterator[ChaosUpstream]:
    with ChaosUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(chaos: ChaosUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("chaos") / "sluice.db"
    with running_gateway(config(db, chaos, ROUTING, models())) as running:
        yield running


@pytest.fixture(scope="module")
def patient(chaos: ChaosUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gateway that waits for a Retry-After of 1 s (max_retry_wait 5)."""
    db = tmp_path_factory.mktemp("chaos-patient") / "sluice.db"
    routing = "{retry_backoff: 0.02, max_retry_wait: 5, cooldown: {enabled: false}, affinity: {enabled: false}}"
    with running_gateway(config(db, chaos, routing, models())) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(chaos: ChaosUpstream) -> None:
    chaos.reset()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One client for the module (making one costs more than most cases take)."""
    with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
        yield client


def sdk(gateway: RunningGateway, http: httpx.Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=CLIENT_TIMEOUT,
                         http_client=http)


# --- what the client receives -----------------------------------------------------------------

_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)


def stream_response(gateway: RunningGateway, http: httpx.Client, model_name: str
                    ) -> tuple[list[dict[str, Any]], httpx.Headers]:
    """The stream's events, each checked against the SDK's event types, and the response headers."""
    with http.stream("POST", f"{gateway.url}/v1/responses", headers=AUTH,
                     json={"model": model_name, "input": "hi", "stream": True}) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = read_events(resp)
    for event in events:
        _EVENT.validate_python(event)  # the SDK parses every event as its declared type
    return events, resp.headers


def stream_events(gateway: RunningGateway, http: httpx.Client, model_name: str) -> list[dict[str, Any]]:
    return stream_response(gateway, http, model_name)[0]


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def message_text(response: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for item in response["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


def trace(response: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    return [(a["provider"], a["model"], a["outcome"], a["status"]) for a in response["routing"]["attempts"]]


def first_route_status(kind: str, failure: str, stream: bool) -> int:
    """The status the trace gives route 1's failure."""
    if failure.startswith("fail-"):
        status = int(failure[5:])
        if status == 529 and kind in ("anthropic", "bedrock"):
            return 503  # their adapters report an overload as the 503 clients know
        if status == 401 and kind == "bedrock":
            return 403  # AWS's UnrecognizedClientException is an access denial
        return status
    if failure == "flaky":
        return 503
    if failure == "error-before-429":
        return 429
    if failure in TIMEOUTS:
        return 504  # upstream_timeout
    if failure in ("error-before", "error-after"):
        # The protocol's own report of an overload or a server error, which each adapter maps to
        # the status it would have come with (500, 503, or 502 for a failed answer with HTTP 200).
        return SERVER_ERROR
    return 502


class _ServerError(int):
    """Equal to any 5xx status."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, int) and 500 <= other <= 599

    def __hash__(self) -> int:
        return 500

    def __repr__(self) -> str:
        return "5xx"


SERVER_ERROR = _ServerError(500)


# --- failures before content: failover the client never sees ----------------------------------


@pytest.mark.parametrize(("kind", "failure", "stream"), FAILOVER_CASES)
def test_failure_before_content_fails_over(gw: RunningGateway, http: httpx.Client, chaos: ChaosUpstream, kind: str,
                                           failure: str, stream: bool) -> None:
    started = time.monotonic()
    name = f"{kind}--{failure}"
    wire = RECORDINGS[kind]
    serving = "flaky" if failure == "flaky" else "ok"
    if stream:
        events, headers = stream_response(gw, http, name)
        assert_well_formed(events)  # gap-free sequence numbers, one terminal event, items well nested
        kinds = [e["type"] for e in events]
        assert kinds.count("response.created") == 1 and "error" not in kinds and "response.failed" not in kinds
        assert kinds[-1] == "response.completed"
        response = events[-1]["response"]
        Response.model_validate(response)
        assert text_of(events) == message_text(response) == wire.stream_text
        assert headers["x-sluice-route"] == f"c-{kind}/{serving}"
    else:
        raw = sdk(gw, http).responses.with_raw_response.create(model=name, input="hi")
        parsed = raw.parse()  # the SDK's own Response
        response = raw.http_response.json()
        assert parsed.status == "completed"
        assert parsed.output_text == wire.body_text
        assert raw.headers["x-sluice-route"] == f"c-{kind}/{serving}"
    elapsed = time.monotonic() - started

    assert response["model"] == f"c-{kind}/{serving}"
    first = "dead" if failure == "refused" else "c"
    tries = 2 if failure in RETRIED else 1
    status = first_route_status(kind, failure, stream)
    expected = [(f"{first}-{kind}", failure, "error", status)] * (2 if failure == "flaky" else tries)
    if failure == "flaky":
        expected[1] = (f"c-{kind}", "flaky", "ok", 200)  # the retry served
    else:
        expected.append((f"c-{kind}", "ok", "ok", 200))
    assert trace(response) == expected, response["routing"]
    attempts = response["routing"]["attempts"]
    if failure in GATEWAY_CODES:
        assert {a["error_code"] for a in attempts[:-1]} == {GATEWAY_CODES[failure]}
    assert attempts[-1]["error_code"] is None
    assert all(isinstance(a["latency_ms"], float) for a in attempts)

    # What the upstream received: the failing route (tries times), then the healthy one; nothing more.
    hits = [(hit.kind, hit.model, hit.stream) for hit in chaos.hits]
    route1 = [] if failure == "refused" else [(kind, failure, stream)] * (2 if failure == "flaky" else tries)
    assert hits == route1 + ([] if failure == "flaky" else [(kind, "ok", stream)])

    if failure in TIMEOUTS:
        # Bounded by the gateway's timeout (the upstream would have kept silent for 10 s), each try.
        for attempt in attempts[:-1]:
            assert TIMEOUT * 1000 * 0.9 <= attempt["latency_ms"] <= TIMEOUT * 1000 + 1000, attempts
        assert elapsed < 2 * TIMEOUT + 2
        assert chaos.wait_for(lambda c: c.disconnects >= 2, 2), "the gateway kept the silent connections open"
    else:
        assert elapsed < QUICK


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_request_refused_upstream_stops_there(gw: RunningGateway, http: httpx.Client, chaos: ChaosUpstream,
                                                kind: str, stream: bool) -> None:
    """A 400 says the request itself is wrong: another route would refuse it too, so none is tried."""
    resp = http.post(f"{gw.url}/v1/responses", headers=AUTH,
                     json={"model": f"{kind}--fail-400", "input": "hi", "stream": stream})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert MESSAGES[400] in error["message"] and error["type"] == "invalid_request_error"
    assert chaos.routes() == [(kind, "fail-400")]


# --- failures after content: the client keeps what it got, and is told --------------------------


@pytest.mark.parametrize(("kind", "failure", "stream"), COMMITTED_CASES)
def test_failure_after_content_ends_the_stream_with_response_failed(gw: RunningGateway, http: httpx.Client,
                                                                    chaos: ChaosUpstream, kind: str, failure: str,
                                                                    stream: bool) -> None:
    started = time.monotonic()
    wire = RECORDINGS[kind]
    events = stream_events(gw, http, f"{kind}--{failure}")
    elapsed = time.monotonic() - started
    assert_well_formed(events)
    kinds = [e["type"] for e in events]
    assert kinds.count("response.created") == 1
    assert kinds[-2:] == ["error", "response.failed"]  # exactly one terminal event (assert_well_formed)
    assert "response.completed" not in kinds
    # The content reached the client, and the failed Response keeps it.
    assert text_of(events) == wire.partial_text != ""
    failed = events[-1]["response"]
    Response.model_validate(failed)
    assert failed["status"] == "failed" and failed["error"]["message"]
    assert message_text(failed) == wire.partial_text
    error = events[-2]
    assert error["message"] and error["code"]
    if failure in GATEWAY_CODES:
        assert error["code"] == GATEWAY_CODES[failure]
    if failure == "error-after":
        assert "overloaded" in error["message"]  # the provider's own words
    # No failover once content went out: one attempt, route 1's, which failed.
    assert [(a["provider"], a["model"], a["outcome"]) for a in failed["routing"]["attempts"]] == [
        (f"c-{kind}", failure, "error")]
    assert chaos.routes() == [(kind, failure)]
    if failure == "stall-after":
        assert elapsed < TIMEOUT + 2  # the idle timeout ended the silence
        assert chaos.wait_for(lambda c: c.disconnects >= 1, 2), "the gateway kept the silent connection open"
    else:
        assert elapsed < QUICK


@pytest.mark.parametrize("kind", KINDS)
def test_the_sdk_reads_a_broken_stream_to_its_failed_end(gw: RunningGateway, http: httpx.Client, kind: str) -> None:
    """The official SDK iterates a stream broken after content to its end: no exception, no hang."""
    with sdk(gw, http).responses.create(model=f"{kind}--error-after", input="hi", stream=True) as stream:
        seen = [event.type for event in stream]
    assert seen[-2:] == ["error", "response.failed"]


# --- 429 and Retry-After ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_retry_after_is_waited_for_when_max_retry_wait_allows(patient: RunningGateway, http: httpx.Client,
                                                              chaos: ChaosUpstream, stream: bool) -> None:
    """With max_retry_wait ≥ 1 s, a 429 with `Retry-After: 1` is retried on the same route after ≥ 1 s:
    a flaky route then serves; one that stays rate limited is left for the next route."""
    cases = [(kind, failure) for kind in KINDS for failure in ("flaky-429", "fail-429")]

    def call(case: tuple[str, str]) -> dict[str, Any]:
        kind, failure = case
        if stream:
            events = stream_events(patient, http, f"{kind}--{failure}")
            assert events[-1]["type"] == "response.completed"
            return events[-1]["response"]
        raw = sdk(patient, http).responses.with_raw_response.create(model=f"{kind}--{failure}", input="hi")
        return raw.http_response.json()

    started = time.monotonic()
    with ThreadPoolExecutor(len(cases)) as pool:  # concurrently: ten 1-second waits in one second
        responses = dict(zip(cases, pool.map(call, cases), strict=True))
    assert time.monotonic() - started < RETRY_AFTER + QUICK
    for (kind, failure), response in responses.items():
        if failure == "flaky-429":
            assert trace(response) == [(f"c-{kind}", failure, "error", 429), (f"c-{kind}", failure, "ok", 200)]
        else:
            assert trace(response) == [(f"c-{kind}", failure, "error", 429), (f"c-{kind}", failure, "error", 429),
                                       (f"c-{kind}", "ok", "ok", 200)]
        tries = [hit.at for hit in chaos.hits if hit.kind == kind and hit.model == failure]
        assert len(tries) == 2
        assert tries[1] - tries[0] >= RETRY_AFTER * 0.95, f"{kind}/{failure} retried before its Retry-After"


# --- every route fails --------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("name", list(ALL_FAIL))
def test_when_every_route_fails(gw: RunningGateway, http: httpx.Client, chaos: ChaosUpstream, name: str,
                                stream: bool) -> None:
    """All rate limited: 429 with Retry-After; otherwise 424 with the last provider's message (a
    provider's 401/403/404 included: the client's own key and request were fine). A stream fails
    before it starts, with the same status."""
    routes, status, message = ALL_FAIL[name]
    started = time.monotonic()
    resp = http.post(f"{gw.url}/v1/responses", headers=AUTH,
                     json={"model": name, "input": "hi", "stream": stream})
    assert time.monotonic() - started < QUICK
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert message in error["message"]
    if status == 429:
        assert resp.headers["retry-after"] == str(RETRY_AFTER)  # the smallest any provider gave
        assert error["type"] == "rate_limit_error"
    else:
        assert "retry-after" not in resp.headers
        assert error["type"] == "upstream_error"
    last_kind, last_failure = routes[-1]
    provider = "dead" if last_failure == "refused" else "c"
    assert resp.headers["x-sluice-route"] == f"{provider}-{last_kind}/{last_failure}"  # the last route tried
    # Every route was tried, in config order (a refused one never reached the upstream); a 429 whose
    # Retry-After is over max_retry_wait and a 401/403/404 once, the others twice.
    expected = [(kind, failure) for kind, failure in routes if failure != "refused"
                for _ in range(1 if failure in ("fail-429", "fail-401", "fail-403", "fail-404") else 2)]
    assert chaos.routes() == expected


def test_every_route_rate_limited_inside_its_stream(gw: RunningGateway, http: httpx.Client,
                                                   chaos: ChaosUpstream) -> None:
    """A rate limit reported inside a 200 stream on every route is a 429 for the client, before its
    stream starts; no provider said when to come back, so no Retry-After (docs/routing.md)."""
    resp = http.post(f"{gw.url}/v1/responses", headers=AUTH,
                     json={"model": "all-429-in-stream", "input": "hi", "stream": True})
    assert resp.status_code == 429, resp.text
    assert "retry-after" not in resp.headers
    error = resp.json()["error"]
    assert error["type"] == "rate_limit_error" and "Rate limit reached" in error["message"]
    assert chaos.routes() == [("openai", "error-before-429")] * 2 + [("bedrock", "error-before-429")] * 2


def test_the_sdk_raises_the_status_the_spec_gives(gw: RunningGateway, http: httpx.Client) -> None:
    client = sdk(gw, http)
    with pytest.raises(openai.RateLimitError) as limited:
        client.responses.create(model="all-429", input="hi")
    assert int(limited.value.response.headers["retry-after"]) >= 1
    with pytest.raises(openai.APIStatusError) as failed:
        client.responses.create(model="only-401", input="hi")
    assert failed.value.status_code == 424  # not 401: the client's key is fine, the provider's is not
    assert MESSAGES[401] in failed.value.message


# --- nothing hangs, nothing leaks ---------------------------------------------------------------


def test_a_client_that_leaves_during_a_retry_wait_stops_the_request(patient: RunningGateway, http: httpx.Client,
                                                                   chaos: ChaosUpstream) -> None:
    """The gateway waits 1 s for a Retry-After; the client leaves first: no retry, no fallback."""
    with pytest.raises(httpx.ReadTimeout):
        http.post(f"{patient.url}/v1/responses", headers=AUTH, timeout=0.3,
                  json={"model": "openai--fail-429", "input": "hi"})
    time.sleep(RETRY_AFTER + 0.3)
    assert chaos.routes() == [("openai", "fail-429")]


def test_many_failing_requests_at_once(gw: RunningGateway, http: httpx.Client, chaos: ChaosUpstream) -> None:
    """Every kind of failure on every upstream type at the same time: each request ends as it would
    alone (clean answer, or a failed stream after content), none waits on another."""
    cases = [(kind, failure, stream) for kind in KINDS for stream in (False, True)
             for failure in ("fail-503", "reset", "slow", "garbage", "cut-before", "error-before", "flaky",
                             "cut-after", "error-after", "stall-after")
             if not (kind == "bedrock" and not stream and failure.startswith("error-"))]

    def call(case: tuple[str, str, bool]) -> str:
        kind, failure, stream = case
        if stream:
            events = stream_events(gw, http, f"{kind}--{failure}")
            assert_well_formed(events)
            return events[-1]["type"]
        resp = http.post(f"{gw.url}/v1/responses", headers=AUTH, json={"model": f"{kind}--{failure}", "input": "hi"})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["status"])

    started = time.monotonic()
    with ThreadPoolExecutor(len(cases)) as pool:
        results = dict(zip(cases, pool.map(call, cases), strict=True))
    assert time.monotonic() - started < 2 * TIMEOUT + QUICK
    for (_, failure, stream), result in results.items():
        if stream and failure in AFTER:
            assert result == "response.failed"
        else:
            assert result in ("completed", "response.completed")


def test_the_gateway_still_serves_after_the_chaos(gw: RunningGateway, http: httpx.Client, chaos: ChaosUpstream) -> None:
    """After all the cases above (resets, cuts, timeouts on pooled connections), every upstream type
    still serves, streamed and not, through the retry of a flaky route."""
    for kind in KINDS:
        for stream in (False, True):
            if stream:
                response = stream_events(gw, http, f"{kind}--flaky")[-1]["response"]
            else:
                raw = sdk(gw, http).responses.with_raw_response.create(model=f"{kind}--flaky", input="hi")
                response = raw.http_response.json()
            assert response["status"] == "completed"
            assert trace(response) == [(f"c-{kind}", "flaky", "error", 503), (f"c-{kind}", "flaky", "ok", 200)]
            chaos.reset()


def test_no_upstream_credential_reaches_the_client(gw: RunningGateway, http: httpx.Client) -> None:
    for name in ("openai--fail-401", "bedrock--fail-403", "gemini--garbage", "anthropic--reset"):
        for stream in (False, True):
            body = http.post(f"{gw.url}/v1/responses", headers=AUTH,
                             json={"model": name, "input": "hi", "stream": stream}).text
            assert "chaos-key-" not in body
    events = json.dumps(stream_events(gw, http, "gemini--error-after"))
    assert "chaos-key-" not in events
