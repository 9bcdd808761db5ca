"""Stages compose around the adapter, hooks run before the client sees the end, attempts are recorded.

A stage here uppercases the answer (as a restore guardrail rewrites it): it must reach the client
identically streamed and not. Two stages show the order (request stages in order, answer stages
in reverse). A hook records every request's end and must have finished before the client receives
the terminal event or the body.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from sluice.pipeline import RequestContext, Stage
from sluice.pipeline.stages import Batches
from tests.conftest import CONFIG, MASTER_KEY, RunningGateway, _free_port, running_gateway
from tests.replay.recordings import Exchange, fixtures_root, load
from tests.replay.server import ReplayServer
from tests.sse import assert_well_formed, read_events

FIX = fixtures_root()
CHAT_STREAM = FIX / "openai-chat/vercel-ai/openai-text.chunks.txt"
CHAT_JSON = FIX / "openai-chat/vercel-ai/openai-text.json"
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


def _upper(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v.upper() if k in ("text", "delta") and isinstance(v, str) else _upper(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_upper(v) for v in value]
    return value


class Recording(Stage):
    """Notes on the context when each of its methods runs."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def request(self, ctx: RequestContext) -> None:
        ctx.guardrails.setdefault("order", []).append(f"request:{self.name}")

    async def result(self, ctx: RequestContext, result: dict[str, Any]) -> dict[str, Any]:
        ctx.guardrails.setdefault("order", []).append(f"result:{self.name}")
        return result

    async def events(self, ctx: RequestContext, batches: Batches) -> Batches:  # type: ignore[override]
        first = True
        async for batch in batches:
            if first:  # noted when the upstream's first batch reaches this stage
                ctx.guardrails.setdefault("order", []).append(f"events:{self.name}")
                first = False
            yield batch


class Uppercase(Stage):
    name = "uppercase"

    async def result(self, ctx: RequestContext, result: dict[str, Any]) -> dict[str, Any]:
        return _upper(result)

    async def events(self, ctx: RequestContext, batches: Batches) -> Batches:  # type: ignore[override]
        async for batch in batches:
            yield [_upper(event) for event in batch]


class EndLog:
    """An end-of-response hook: what it saw, and when it finished."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}

    async def __call__(self, ctx: RequestContext) -> None:
        await asyncio.sleep(0.2)  # slow on purpose: the client must still not see the end first
        self.seen[ctx.response_id if ctx.response else f"error:{len(self.seen)}"] = {
            "status": ctx.response["status"] if ctx.response else None,
            "error": ctx.error.status if ctx.error else None,
            "attempts": [(a.route.label, a.outcome, a.first_token is not None) for a in ctx.attempts],
            "order": list(ctx.guardrails.get("order", ())),
            "finished": time.monotonic(),
        }


@pytest.fixture(scope="module")
def gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("stages") / "sluice.db"
    text = CONFIG.format(db=db, master=MASTER_KEY, upstream=upstream.url, dead_port=_free_port())
    text += "routing: {retries: 1, retry_backoff: 0.01}\n"
    with running_gateway(text) as running:
        pipeline = running.app.pipeline
        assert pipeline is not None
        pipeline.stages += [Recording("outer"), Uppercase(), Recording("inner")]
        pipeline.hooks.append(EndLog())
        yield running


def _log(gw: RunningGateway) -> EndLog:
    assert gw.app.pipeline is not None
    hook = gw.app.pipeline.hooks[0]
    assert isinstance(hook, EndLog)
    return hook


def _expected_text() -> str:
    return load(CHAT_JSON)[0].json()["choices"][0]["message"]["content"]


def _streamed_text() -> str:
    return "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in load(CHAT_STREAM)[0].events()
                   if chunk.get("choices"))


def test_an_answer_stage_rewrites_a_whole_answer(gw: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue(load(CHAT_JSON)[0])
    resp = httpx.post(f"{gw.url}/v1/responses", headers=AUTH, json={"model": "chat", "input": "hi"}, timeout=20)
    received = time.monotonic()
    response = resp.json()
    assert response["output"][0]["content"][0]["text"] == _expected_text().upper()
    entry = _log(gw).seen[response["id"]]
    assert entry["finished"] <= received  # the hook was done before the body left
    assert entry["status"] == "completed"
    assert entry["order"] == ["request:outer", "request:inner", "result:inner", "result:outer"]


def test_an_answer_stage_rewrites_a_stream(gw: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue(load(CHAT_STREAM)[0])
    terminal_at = None
    with httpx.stream("POST", f"{gw.url}/v1/responses", headers=AUTH, timeout=20,
                      json={"model": "chat", "input": "hi", "stream": True}) as resp:
        events = []
        for event in _iter_events(resp):
            events.append(event)
            if event["type"] == "response.completed":
                terminal_at = time.monotonic()
    assert_well_formed(events)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    final = events[-1]["response"]
    assert text == final["output"][0]["content"][0]["text"] == _streamed_text().upper()
    entry = _log(gw).seen[final["id"]]
    assert terminal_at is not None and entry["finished"] <= terminal_at
    assert entry["order"] == ["request:outer", "request:inner", "events:inner", "events:outer"]
    # The SDK parses the rewritten stream like any other.
    upstream.enqueue(load(CHAT_STREAM)[0])
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)
    with client.responses.stream(model="chat", input="hi") as stream:
        assert stream.get_final_response().output_text == _streamed_text().upper()


def _iter_events(resp: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in resp.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


def test_attempts_are_recorded_and_hooks_see_a_failover(gw: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue(load(CHAT_JSON)[0])
    resp = httpx.post(f"{gw.url}/v1/responses", headers=AUTH, json={"model": "failover-model", "input": "hi"},
                      timeout=20)
    assert resp.status_code == 200
    entry = _log(gw).seen[resp.json()["id"]]
    # The dead route was retried once (retryable connection failure), then the next route served.
    assert entry["attempts"] == [("dead/gpt-4o", "error", False), ("dead/gpt-4o", "error", False),
                                 ("replay-chat/gpt-4o", "ok", True)]


def test_a_retryable_failure_is_retried_on_the_same_route(gw: RunningGateway, upstream: ReplayServer) -> None:
    flaky = Exchange(method="POST", path="/", request_body=None, status=503,
                     headers={"content-type": "application/json", "retry-after": "0"},
                     body=b'{"error": {"message": "busy"}}', stream=False, source="synthetic")
    upstream.enqueue([flaky, load(CHAT_JSON)[0]])
    resp = httpx.post(f"{gw.url}/v1/responses", headers=AUTH, json={"model": "chat", "input": "hi"}, timeout=20)
    assert resp.status_code == 200
    assert _log(gw).seen[resp.json()["id"]]["attempts"] == [("replay-chat/gpt-4o-2024-08-06", "error", False),
                                                            ("replay-chat/gpt-4o-2024-08-06", "ok", True)]


def test_hooks_run_for_a_refused_request_and_a_failed_stream(gw: RunningGateway, upstream: ReplayServer) -> None:
    hook = _log(gw)
    before = len(hook.seen)
    resp = httpx.post(f"{gw.url}/v1/responses", headers=AUTH, json={"model": "dead-model", "input": "hi"}, timeout=20)
    assert resp.status_code == 424
    refused = list(hook.seen.values())[before]
    assert refused["error"] == 424 and refused["status"] is None
    upstream.enqueue(load(CHAT_STREAM)[0], fail_after_events=5)
    with httpx.stream("POST", f"{gw.url}/v1/responses", headers=AUTH, timeout=20,
                      json={"model": "chat", "input": "hi", "stream": True}) as stream_resp:
        events = read_events(stream_resp)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    entry = hook.seen[events[-1]["response"]["id"]]
    assert entry["status"] == "failed" and entry["attempts"][-1][1] == "error"


def test_hooks_run_when_the_client_leaves_mid_stream(gw: RunningGateway, upstream: ReplayServer) -> None:
    hook = _log(gw)
    upstream.enqueue(load(CHAT_STREAM)[0], event_delay=0.05)  # seconds to read to the end
    with httpx.stream("POST", f"{gw.url}/v1/responses", headers=AUTH, timeout=20,
                      json={"model": "chat", "input": "hi", "stream": True}) as resp:
        for line in resp.iter_lines():
            if "output_text.delta" in line:
                break  # the client walks away
    deadline = time.monotonic() + 5
    while not any(e["error"] == 499 for e in hook.seen.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [e for e in hook.seen.values() if e["error"] == 499]
    assert left and left[0]["attempts"][-1][:2] == ("replay-chat/gpt-4o-2024-08-06", "error")


def test_every_response_carries_its_routing_trace(gw: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue(load(CHAT_JSON)[0])
    resp = httpx.post(f"{gw.url}/v1/responses", headers=AUTH, json={"model": "failover-model", "input": "hi"},
                      timeout=20)
    assert resp.headers["x-sluice-route"] == "replay-chat/gpt-4o"
    trace = resp.json()["routing"]
    assert [(a["provider"], a["model"], a["outcome"]) for a in trace["attempts"]] == [
        ("dead", "gpt-4o", "error"), ("dead", "gpt-4o", "error"), ("replay-chat", "gpt-4o", "ok")]
    failed, served = trace["attempts"][0], trace["attempts"][-1]
    assert failed["status"] == 502 and failed["error_code"] == "upstream_connection_error"
    assert failed["ttft_ms"] is None and failed["latency_ms"] >= 0
    assert served["status"] == 200 and 0 <= served["ttft_ms"] <= served["latency_ms"]
    # Streamed: in response.completed, and the header names the serving route.
    upstream.enqueue(load(CHAT_STREAM)[0])
    with httpx.stream("POST", f"{gw.url}/v1/responses", headers=AUTH, timeout=20,
                      json={"model": "chat", "input": "hi", "stream": True}) as stream_resp:
        assert stream_resp.headers["x-sluice-route"] == "replay-chat/gpt-4o-2024-08-06"
        events = read_events(stream_resp)
    attempts = events[-1]["response"]["routing"]["attempts"]
    assert [(a["outcome"], a["status"]) for a in attempts] == [("ok", 200)] and attempts[0]["ttft_ms"] is not None


def test_an_error_names_the_last_route_tried(gw: RunningGateway, upstream: ReplayServer) -> None:
    resp = httpx.post(f"{gw.url}/v1/responses", headers=AUTH, json={"model": "dead-model", "input": "hi"}, timeout=20)
    assert resp.status_code == 424 and resp.headers["x-sluice-route"] == "dead/gpt-4o"
