"""What a request's failures mean: retries, failover, and the status the client gets.

docs/routing.md, "Failures, retries and the client's status". Driven through a real gateway with
the official `openai` SDK (its own retries off) in front of the replay server; the context-length
detection is checked over the providers' real error answers (tests/recordings/context-length).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import openai
import pytest

from sluice.config import ProviderConfig, RoutingConfig
from sluice.errors import (
    MAX_RETRY_AFTER,
    NoRouteSucceeded,
    RateLimited,
    UpstreamError,
    is_context_length_error,
    parse_retry_after,
)
from sluice.pipeline.attempts import error_from_event, final_error
from sluice.pipeline.context import Attempt, RequestContext
from sluice.providers import create_adapter
from sluice.routing.catalog import Route
from sluice.routing.policy import Action, DefaultPolicy
from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.replay.recordings import Exchange, all_recordings, fixtures_root, infer_provider, load
from tests.replay.server import ReplayServer

FIX = fixtures_root()
CONTEXT_ERRORS = json.loads((Path(__file__).parent / "recordings/context-length/errors.json").read_text())
CHAT_JSON = FIX / "openai-chat/vercel-ai/openai-text.json"
CHAT_STREAM = FIX / "openai-chat/vercel-ai/openai-text.chunks.txt"
RESPONSES_JSON = FIX / "openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml"
RESPONSES_STREAM = FIX / "openai-responses/simonw-llm/test_responses_basic_streaming.yaml"

CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
routing: {{retry_backoff: 0.05{routing}}}
providers:
  p-chat: {{type: openai-chat, base_url: "{upstream}/v1", api_key: sk-upstream-chat-0000}}
  p-chat-2: {{type: openai-chat, base_url: "{upstream}/v1", api_key: sk-upstream-chat2-0000}}
  p-anthropic: {{type: anthropic, base_url: "{upstream}", api_key: sk-ant-upstream-0000}}
  p-gemini: {{type: gemini, base_url: "{upstream}", api_key: gemini-upstream-key-0000}}
  p-openai: {{type: openai, base_url: "{upstream}/v1", api_key: sk-upstream-openai-0000}}
models:
  one:
    routes:
      - {{provider: p-chat, model: one}}
  two:
    routes:
      - {{provider: p-chat, model: two-a}}
      - {{provider: p-chat-2, model: two-b}}
  small:
    context_window: 8000
    routes:
      - {{provider: p-chat, model: small-a}}
      - {{provider: p-anthropic, model: small-b}}
  mystery:  # no context_window: unknown, so never skipped for size
    routes:
      - {{provider: p-gemini, model: mystery}}
  big:
    context_window: 128000
    routes:
      - {{provider: p-openai, model: big}}
"""


def _gateway(upstream: ReplayServer, tmp: pytest.TempPathFactory, routing: str = "") -> Iterator[RunningGateway]:
    db = tmp.mktemp("failover-errors") / "sluice.db"
    with running_gateway(CONFIG.format(db=db, master=MASTER_KEY, upstream=upstream.url, routing=routing)) as gw:
        yield gw


@pytest.fixture(scope="module")
def gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    yield from _gateway(upstream, tmp_path_factory)


@pytest.fixture(scope="module")
def short_deadline(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    # A Retry-After up to a minute would be waited for; only the 5 s deadline can say no.
    yield from _gateway(upstream, tmp_path_factory, ", deadline: 5, max_retry_wait: 60")


def _sdk(gateway: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)


def _error(status: int, body: Any, headers: dict[str, str] | None = None) -> Exchange:
    return Exchange(method="POST", path="/", request_body=None, status=status, stream=False, source="synthetic",
                    headers={"content-type": "application/json", **(headers or {})}, body=json.dumps(body).encode())


def _openai_error(status: int, message: str, code: str | None, headers: dict[str, str] | None = None) -> Exchange:
    return _error(status, {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": code}}, headers)


def _rate_limited(retry_after: str | None = None) -> Exchange:
    return _openai_error(429, "Rate limit reached for requests", "rate_limit_exceeded",
                         {"retry-after": retry_after} if retry_after else None)


def _overloaded(retry_after: str | None = None) -> Exchange:
    return _error(503, {"error": {"message": "The server is overloaded.", "type": "server_error"}},
                  {"retry-after": retry_after} if retry_after else None)


def _recorded(case_id: str) -> Exchange:
    case = next(c for c in CONTEXT_ERRORS["detected"] if c["id"] == case_id)
    return _error(case["status"], case["body"], case.get("headers"))


def _trace(response: Any) -> list[tuple[str, str, str, int | None, str | None]]:
    attempts = response.model_extra["routing"]["attempts"]
    return [(a["provider"], a["model"], a["outcome"], a["status"], a["error_code"]) for a in attempts]


def _ask(client: openai.OpenAI, stream: bool, **kw: Any) -> Any:
    if stream:
        with client.responses.stream(input="hi", **kw) as events:
            return events.get_final_response()
    return client.responses.create(input="hi", **kw)


# --- the provider's fault is not the client's ------------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [(401, "invalid_api_key"), (402, "insufficient_balance"),
                                              (403, "permission_denied"), (404, "model_not_found")])
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_a_providers_refusal_is_424(gw: RunningGateway, upstream: ReplayServer, status: int, code: str,
                                    stream: bool) -> None:
    upstream.enqueue(_openai_error(status, "Incorrect API key provided: sk-upstream-chat-0000.", code))
    with pytest.raises(openai.APIStatusError) as caught:
        _ask(_sdk(gw), stream, model="one")
    # Not a 401/403/404 the client would read as its own key or model being wrong.
    assert caught.value.status_code == 424
    assert caught.value.body["type"] == "upstream_error"  # type: ignore[index]
    assert caught.value.body["code"] == code  # type: ignore[index]
    message = caught.value.body["message"]  # type: ignore[index]
    assert message == "p-chat: Incorrect API key provided: [redacted]."  # names the provider, not its key
    assert len(upstream.requests) == 1  # asking again would be refused again


def test_every_route_rate_limited_is_429_with_the_soonest_retry_after(gw: RunningGateway,
                                                                     upstream: ReplayServer) -> None:
    # Both waits are longer than max_retry_wait (10 s): no retry, each route is left at once.
    upstream.enqueue([_rate_limited("30"), _rate_limited("12.5")])
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as caught:
        _sdk(gw).responses.create(model="two", input="hi")
    assert time.monotonic() - started < 5
    assert caught.value.response.headers["retry-after"] == "13"  # the smaller, rounded up
    assert caught.value.code == "rate_limit_exceeded"
    assert "Rate limit reached" in caught.value.message
    assert [r.json["model"] for r in upstream.requests] == ["two-a", "two-b"]


def test_every_route_rate_limited_without_a_wait_is_429_without_retry_after(gw: RunningGateway,
                                                                            upstream: ReplayServer) -> None:
    upstream.enqueue([_rate_limited()] * 4)  # each route retried once after a short backoff
    with pytest.raises(openai.RateLimitError) as caught:
        _sdk(gw).responses.create(model="two", input="hi")
    assert "retry-after" not in caught.value.response.headers
    assert [r.json["model"] for r in upstream.requests] == ["two-a", "two-a", "two-b", "two-b"]


@pytest.mark.parametrize("wait", ["1e999", "nan", "-inf"])
def test_a_retry_after_that_is_no_number_of_seconds_is_ignored(gw: RunningGateway, upstream: ReplayServer,
                                                               wait: str) -> None:
    # An infinite wait was a cooldown that never ends, then a 500 writing the client's Retry-After.
    upstream.enqueue([_rate_limited(wait)] * 4)
    with pytest.raises(openai.RateLimitError) as caught:
        _sdk(gw).responses.create(model="two", input="hi")
    assert "retry-after" not in caught.value.response.headers
    assert len(upstream.requests) == 4  # each route retried once after a backoff, as without a wait


def test_retry_after_values_are_bounded_seconds() -> None:
    assert parse_retry_after("12.5") == 12.5
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("Wed, 21 Oct 1999 07:28:00 GMT") == 0.0  # a date past
    assert parse_retry_after("99999999999") == MAX_RETRY_AFTER
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT") == MAX_RETRY_AFTER
    for bad in ("1e999", "nan", "inf", "soon", ""):
        assert parse_retry_after(bad) is None
    assert "retry-after" not in RateLimited("x", retry_after=float("inf")).headers


@pytest.mark.parametrize("rate_limited_first", [True, False], ids=["429-then-503", "503-then-429"])
def test_a_rate_limit_and_an_outage_is_424(gw: RunningGateway, upstream: ReplayServer,
                                           rate_limited_first: bool) -> None:
    # Not every route was rate limited: waiting would not help the one that is down.
    outage = [_overloaded(), _overloaded()]  # retried once
    upstream.enqueue([_rate_limited("30"), *outage] if rate_limited_first else [*outage, _rate_limited("30")])
    with pytest.raises(openai.APIStatusError) as caught:
        _sdk(gw).responses.create(model="two", input="hi")
    assert caught.value.status_code == 424
    assert "retry-after" not in caught.value.response.headers
    last = "p-chat-2: The server is overloaded." if rate_limited_first else "p-chat-2: Rate limit reached for requests"
    assert caught.value.body["message"] == last  # type: ignore[index]
    calls = ["two-a", "two-b", "two-b"] if rate_limited_first else ["two-a", "two-a", "two-b"]
    assert [r.json["model"] for r in upstream.requests] == calls


# --- context length --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_context_length_moves_to_a_larger_window(gw: RunningGateway, upstream: ReplayServer, stream: bool) -> None:
    upstream.enqueue([_recorded("vllm"), load(RESPONSES_STREAM if stream else RESPONSES_JSON)[0]])
    response = _ask(_sdk(gw), stream, model="small", extra_body={"routing": {"model": {"fallbacks": ["big"]}}})
    assert response.model == "p-openai/big"
    # small-b has the same 8000-token window that just overflowed: passed over without a call.
    assert _trace(response) == [
        ("p-chat", "small-a", "error", 400, "context_length_exceeded"),
        ("p-anthropic", "small-b", "skipped", None, None),
        ("p-openai", "big", "ok", 200, None)]
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions", "/v1/responses"]


def test_a_route_of_unknown_window_is_tried(gw: RunningGateway, upstream: ReplayServer) -> None:
    # Each provider says it its own way: a Chat server, then Gemini, both read as a context overflow.
    upstream.enqueue([_recorded("openai-chat"), _recorded("gemini"), load(RESPONSES_JSON)[0]])
    response = _sdk(gw).responses.create(model="small", input="hi", extra_body={
        "routing": {"model": {"fallbacks": ["mystery", "big"]}}})
    assert response.model == "p-openai/big"
    assert _trace(response) == [
        ("p-chat", "small-a", "error", 400, "context_length_exceeded"),
        ("p-anthropic", "small-b", "skipped", None, None),
        ("p-gemini", "mystery", "error", 400, "context_length_exceeded"),
        ("p-openai", "big", "ok", 200, None)]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_context_length_without_a_larger_window_is_400(gw: RunningGateway, upstream: ReplayServer,
                                                       stream: bool) -> None:
    upstream.enqueue(_recorded("openai-chat"))
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(_sdk(gw), stream, model="small")
    body = caught.value.body
    assert body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert body["param"] == "messages"  # type: ignore[index]  # the provider's, as it said it
    assert "maximum context length is 4097 tokens" in caught.value.message
    assert len(upstream.requests) == 1  # the other 8000-token route was not asked


def test_another_bad_request_stops_at_once(gw: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "openai-chat/vercel-ai/reasoning-model-legacy-parameter-error.json")[0])
    with pytest.raises(openai.BadRequestError) as caught:
        _sdk(gw).responses.create(model="two", input="hi")
    assert caught.value.body["param"] == "max_tokens"  # type: ignore[index]
    assert len(upstream.requests) == 1  # another route would refuse it too


# --- retries ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_a_flaky_route_is_retried_and_serves(gw: RunningGateway, upstream: ReplayServer, stream: bool) -> None:
    upstream.enqueue([_overloaded(), load(CHAT_STREAM if stream else CHAT_JSON)[0]])
    response = _ask(_sdk(gw), stream, model="two")
    assert response.model == "p-chat/two-a"
    assert _trace(response) == [("p-chat", "two-a", "error", 503, None), ("p-chat", "two-a", "ok", 200, None)]


def test_an_unreadable_answer_is_retried(gw: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue([_error(200, ["not", "a", "completion"]), load(CHAT_JSON)[0]])
    response = _sdk(gw).responses.create(model="one", input="hi")
    assert _trace(response) == [("p-chat", "one", "error", 502, "upstream_invalid_response"),
                                ("p-chat", "one", "ok", 200, None)]


def test_a_retry_waits_for_retry_after(short_deadline: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue([_rate_limited("1"), load(CHAT_JSON)[0]])
    started = time.monotonic()
    response = _sdk(short_deadline).responses.create(model="two", input="hi")
    assert time.monotonic() - started >= 1.0  # the provider said one second: not sooner
    assert _trace(response) == [("p-chat", "two-a", "error", 429, "rate_limit_exceeded"),
                                ("p-chat", "two-a", "ok", 200, None)]


def test_a_retry_after_past_the_deadline_moves_on_at_once(short_deadline: RunningGateway,
                                                          upstream: ReplayServer) -> None:
    upstream.enqueue([_rate_limited("30"), load(CHAT_JSON)[0]])
    started = time.monotonic()
    response = _sdk(short_deadline).responses.create(model="two", input="hi")
    assert time.monotonic() - started < 2  # neither 30 s nor the 5 s deadline waited for
    assert _trace(response) == [("p-chat", "two-a", "error", 429, "rate_limit_exceeded"),
                                ("p-chat-2", "two-b", "ok", 200, None)]


# --- the policy and the final error, unit by unit ---------------------------------------------------------


def _route(model: str, window: int | None = None) -> Route:
    return Route(provider=f"p-{model}", model=model, price=None, capabilities=frozenset(), canonical=model,
                 context_window=window)


def _failed(route: Route, error: UpstreamError, outcome: str = "error") -> Attempt:
    attempt = Attempt(route, 0.0)
    attempt.fail(error, 0.1)
    attempt.outcome = outcome
    return attempt


def _ctx(*attempts: Attempt, deadline: float = 600.0) -> RequestContext:
    return cast(RequestContext, SimpleNamespace(attempts=list(attempts), deadline=time.monotonic() + deadline))


def _upstream(status: int, code: str | None = None, retry_after: float | None = None,
              message: str = "failed") -> UpstreamError:
    return UpstreamError(f"p: {message}", provider="p", retryable=status in (429, 500, 503), status=status, code=code,
                         retry_after=retry_after)


def test_policy_decisions() -> None:
    policy = DefaultPolicy(RoutingConfig(retries=1, retry_backoff=0.2, max_retry_wait=10))
    a = _route("a")

    def decide(error: UpstreamError, *earlier: Attempt, deadline: float = 600.0) -> tuple[Action, float]:
        attempt = _failed(a, error)
        decision = policy.after_attempt(_ctx(*earlier, attempt, deadline=deadline), attempt)
        return decision.action, decision.delay

    assert decide(_upstream(503))[0] is Action.RETRY
    assert 0.1 <= decide(_upstream(503))[1] <= 0.2  # the first backoff, jittered
    assert decide(_upstream(503), _failed(a, _upstream(503)))[0] is Action.NEXT  # retried once already
    assert decide(_upstream(429, retry_after=3.5)) == (Action.RETRY, 3.5)  # exactly as long as asked
    assert decide(_upstream(429, retry_after=11))[0] is Action.NEXT  # longer than max_retry_wait
    assert decide(_upstream(429, retry_after=3.5), deadline=2)[0] is Action.NEXT  # would end past the deadline
    assert decide(_upstream(400))[0] is Action.STOP
    assert decide(_upstream(400, "context_length_exceeded"))[0] is Action.NEXT
    for status in (401, 402, 403, 404):
        assert decide(_upstream(status))[0] is Action.NEXT
    assert decide(_upstream(429, "insufficient_quota"))[0] is Action.NEXT  # no wait refills a balance


def test_policy_skips_windows_that_cannot_be_larger() -> None:
    policy = DefaultPolicy(RoutingConfig())
    overflow = _upstream(400, "context_length_exceeded")
    ctx = _ctx(_failed(_route("a", 8000), overflow))
    assert policy.before_attempt(ctx, _route("same", 8000)) is not None
    assert policy.before_attempt(ctx, _route("smaller", 4000)) is not None
    assert policy.before_attempt(ctx, _route("larger", 8001)) is None
    assert policy.before_attempt(ctx, _route("unknown")) is None
    # The bar is the largest window that overflowed; an overflow on an unknown window sets none.
    ctx = _ctx(_failed(_route("a", 8000), overflow), _failed(_route("b", 32000), overflow),
               _failed(_route("c"), overflow))
    assert policy.before_attempt(ctx, _route("mid", 16000)) is not None
    assert policy.before_attempt(ctx, _route("big", 64000)) is None
    assert policy.before_attempt(_ctx(_failed(_route("c"), overflow)), _route("any", 1000)) is None
    assert policy.before_attempt(_ctx(_failed(_route("a", 8000), _upstream(503))), _route("same", 8000)) is None


def test_final_error_counts_rate_limit_cooldowns() -> None:
    a, b, c = _route("a"), _route("b"), _route("c")
    # A route skipped while cooling down from a 429 is recorded with the wait left.
    cooling = _failed(b, _upstream(429, "rate_limit_exceeded", retry_after=2.1), outcome="cooldown")
    error = final_error(_ctx(_failed(a, _upstream(429, "rate_limit_exceeded", retry_after=4.2)), cooling))
    assert isinstance(error, RateLimited) and error.status == 429 and error.headers == {"retry-after": "3"}
    error = final_error(_ctx(cooling))
    assert error.status == 429 and error.headers == {"retry-after": "3"}
    error = final_error(_ctx(_failed(a, _upstream(503)), cooling))
    assert isinstance(error, NoRouteSucceeded) and error.status == 424
    # Skipped routes are no failure: one rate-limited call is every failure there was.
    skipped = Attempt(c, 0.0, ended=0.0, outcome="skipped")
    assert final_error(_ctx(_failed(a, _upstream(429)), skipped)).status == 429
    # An exhausted balance says 429 but is the gateway's billing problem.
    assert final_error(_ctx(_failed(a, _upstream(429, "insufficient_quota")))).status == 424
    assert final_error(_ctx()).status == 424


def test_final_error_keeps_the_requests_own_fault() -> None:
    a, b = _route("a"), _route("b")
    bad = UpstreamError("p: bad", provider="p", retryable=False, status=422, param="input[0]", code="invalid_value")
    assert final_error(_ctx(_failed(a, _upstream(503)), _failed(b, bad))) is bad
    overflow = _upstream(400, "context_length_exceeded")
    assert final_error(_ctx(_failed(a, _upstream(503)), _failed(b, overflow))) is overflow
    # An overflow on one route, then an outage on the larger one: that route may serve later.
    assert final_error(_ctx(_failed(a, overflow), _failed(b, _upstream(503)))).status == 424
    # A message from inside a stream may not name its provider; the 424 does.
    stream_error = UpstreamError("invalid x-api-key", provider="p-anthropic", retryable=False, status=401)
    assert final_error(_ctx(_failed(a, stream_error))).message == "p-anthropic: invalid x-api-key"


# --- context-length errors, as every provider says them ---------------------------------------------------


class _Answer:
    """Just what an adapter's HTTP error path reads of an upstream answer."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self._body, self.headers = status, body, headers

    async def read_prefix(self) -> bytes:
        return self._body


def _read(case: dict[str, Any]) -> UpstreamError:
    """The error Sluice makes of a recorded answer, through the adapter path it takes in the gateway."""
    adapter = create_adapter(f"p-{case['wire']}", ProviderConfig(type=case["wire"], api_key="upstream-key",
                                                                  region="us-east-1"))
    body = case["body"]
    if case["where"] == "event":
        return error_from_event(body, adapter)
    raw = json.dumps(body).encode()
    if case["where"] == "in-200":
        return adapter.error_from_body(200, raw)
    answer = _Answer(case["status"], raw, case.get("headers") or {})
    return asyncio.run(adapter.error_from_response(answer))  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CONTEXT_ERRORS["detected"], ids=lambda c: c["id"])
def test_context_length_errors_are_detected(case: dict[str, Any]) -> None:
    error = _read(case)
    assert (error.status, error.code, error.type) == (400, "context_length_exceeded", "invalid_request_error")
    assert not error.retryable  # the same request will not fit the same window next time
    assert error.message  # the provider's own words reach the client


@pytest.mark.parametrize("case", CONTEXT_ERRORS["not_detected"], ids=lambda c: c["id"])
def test_look_alikes_are_not_context_length(case: dict[str, Any]) -> None:
    error = _read(case)
    assert error.code != "context_length_exceeded" and error.status == case["status"]


WIRE = {"openai-responses": "openai", "openai-chat": "openai-chat", "anthropic": "anthropic", "gemini": "gemini",
        "bedrock": "bedrock"}
RECORDED_ERRORS = [pytest.param(path, index, id=f"{path.name}#{index}") for path in all_recordings()
                   for index, exchange in enumerate(load(path)) if exchange.status >= 400]


@pytest.mark.parametrize(("path", "index"), RECORDED_ERRORS)
def test_recorded_errors_are_not_context_length(path: Path, index: int) -> None:
    exchange = load(path)[index]
    case = {"wire": WIRE[infer_provider(path)], "where": "http", "status": exchange.status,
            "body": json.loads(exchange.body), "headers": exchange.headers}
    assert _read(case).code != "context_length_exceeded"


def test_detection_needs_the_words_not_just_the_status() -> None:
    assert is_context_length_error("prompt is too long: 201130 tokens > 200000 maximum")
    assert is_context_length_error(None, "context_length_exceeded")
    assert is_context_length_error("bad", None, "exceed_context_size_error")
    assert not is_context_length_error("Invalid 'input': string too long.", "string_above_max_length")
    # Statuses about something else keep their meaning whatever the text says.
    for status in (401, 403, 404, 429):
        error = UpstreamError("p: This model's maximum context length is 8192 tokens.", provider="p",
                              retryable=status == 429, status=status)
        assert error.status == status and error.code is None
