"""A route that fails before any content is passed over the same way on every upstream type,
streamed or not: the client gets one clean answer from the next route and never sees the failure.

Each upstream type fails in three ways before its first content — an HTTP error, an error the
protocol reports inside a 200 answer (an `error` event, an error chunk, an exception frame), and
a connection cut right after the headers — and the model's second route (a Chat server) answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.replay.recordings import Exchange, fixtures_root, load
from tests.replay.server import ReplayServer
from tests.sse import assert_well_formed, read_events

FIX = fixtures_root()
OWN = Path(__file__).parent / "recordings"

CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
# Failover, not retries, is what these tests watch: each failure moves on to the next route at once
# (retries on the same route: tests/test_failover_errors.py).
routing: {{retries: 0}}
providers:
  p-openai: {{type: openai, base_url: "{upstream}/v1", api_key: sk-upstream-openai-0000}}
  p-chat: {{type: openai-chat, base_url: "{upstream}/v1", api_key: sk-upstream-chat-0000}}
  p-anthropic: {{type: anthropic, base_url: "{upstream}", api_key: sk-ant-upstream-0000}}
  p-gemini: {{type: gemini, base_url: "{upstream}", api_key: gemini-upstream-key-0000}}
  p-bedrock: {{type: bedrock, base_url: "{upstream}", region: us-east-1, api_key: bedrock-upstream-key-0000}}
models:
{models}
"""
TYPES = ("openai", "chat", "anthropic", "gemini", "bedrock")
MODEL = """  via-{kind}:
    routes:
      - {{provider: p-{kind}, model: first-choice}}
      - {{provider: p-chat, model: fallback-model}}
"""
# What the fallback route answers, streamed and not.
CHAT_STREAM = FIX / "openai-chat/vercel-ai/openai-text.chunks.txt"
CHAT_JSON = FIX / "openai-chat/vercel-ai/openai-text.json"


def _sse(*payloads: dict[str, Any], event: str | None = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    return b"".join(f"{prefix}data: {json.dumps(p)}\n\n".encode() for p in payloads)


def _exchange(body: bytes, *, status: int = 200, content_type: str = "text/event-stream",
              stream: bool = True) -> Exchange:
    return Exchange(method="POST", path="/", request_body=None, status=status,
                    headers={"content-type": content_type}, body=body, stream=stream, source="synthetic")


def http_error() -> Exchange:
    return _exchange(b'{"error": {"message": "The server is overloaded.", "type": "server_error"}}', status=503,
                     content_type="application/json", stream=False)


def error_inside(kind: str) -> Exchange:
    """A 200 stream whose first message is the protocol's own error report."""
    if kind == "openai":
        return load(FIX / "openai-responses/vercel-ai/openai-error.1.chunks.txt")[0]
    if kind == "chat":
        return _exchange(_sse({"error": {"message": "The server is overloaded.", "code": "server_error"}}))
    if kind == "anthropic":
        return load(OWN / "anthropic/stream-overloaded-at-start.sse", provider="anthropic")[0]
    if kind == "gemini":
        return _exchange(_sse({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}))
    return load(OWN / "bedrock/stream-exception-first.yaml", provider="bedrock")[0]


def a_success(kind: str, stream: bool) -> Exchange:
    """A real answer of the route's protocol (to be cut after its headers)."""
    if kind == "openai":
        name = "test_responses_basic_streaming" if stream else "test_responses_basic_non_streaming"
        return load(FIX / f"openai-responses/simonw-llm/{name}.yaml")[0]
    if kind == "chat":
        return load(CHAT_STREAM if stream else CHAT_JSON)[0]
    if kind == "anthropic":
        return load(OWN / "anthropic/tool-loop-thinking.1.sse", provider="anthropic")[0]
    ext = "chunks.txt" if stream else "json"
    return load(OWN / f"{kind}/tool-loop-{'thinking' if kind == 'gemini' else 'reasoning'}.1.{ext}", provider=kind)[0]


@pytest.fixture(scope="module")
def gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("failover") / "sluice.db"
    models = "".join(MODEL.format(kind=kind) for kind in TYPES)
    with running_gateway(CONFIG.format(db=db, master=MASTER_KEY, upstream=upstream.url, models=models)) as running:
        yield running


def _fallback_text() -> str:
    return "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in load(CHAT_STREAM)[0].events()
                   if chunk.get("choices"))


FAILURES = ["http-error", "error-inside", "cut"]


def error_inside_answer(kind: str) -> Exchange:
    """A 200 JSON answer that reports a failure instead of an answer."""
    if kind == "openai":
        body: dict[str, Any] = {"id": "resp_1", "object": "response", "status": "failed", "output": [],
                                "error": {"code": "server_error", "message": "The model failed."}}
    elif kind == "anthropic":
        body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    elif kind == "chat":
        body = {"error": {"message": "The server is overloaded.", "code": "server_error"}}
    else:
        body = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    return _exchange(json.dumps(body).encode(), content_type="application/json", stream=False)


def _enqueue_failure(upstream: ReplayServer, kind: str, failure: str, stream: bool) -> None:
    if failure == "http-error":
        upstream.enqueue(http_error())
    elif failure == "error-inside":
        upstream.enqueue(error_inside(kind) if stream else error_inside_answer(kind))
    else:
        upstream.enqueue(a_success(kind, stream), fail_after_events=0)


# Bedrock's Converse reports a whole answer's failure by HTTP status only.
CREATE_CASES = [(kind, failure) for kind in TYPES for failure in FAILURES
                if not (kind == "bedrock" and failure == "error-inside")]


@pytest.mark.parametrize(("kind", "failure"), CREATE_CASES)
def test_create_fails_over(gw: RunningGateway, upstream: ReplayServer, kind: str, failure: str) -> None:
    _enqueue_failure(upstream, kind, failure, stream=False)
    upstream.enqueue(load(CHAT_JSON)[0])
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)
    response = client.responses.create(model=f"via-{kind}", input="hi")
    assert response.model == "p-chat/fallback-model"
    assert response.output_text == load(CHAT_JSON)[0].json()["choices"][0]["message"]["content"]
    assert len(upstream.requests) == 2 and upstream.requests[-1].path == "/v1/chat/completions"


def _one_clean_stream(gw: RunningGateway, kind: str) -> list[dict[str, Any]]:
    """The events of a streamed request for `via-<kind>`: well formed, one start, no error."""
    with httpx.stream("POST", f"{gw.url}/v1/responses", headers={"authorization": f"Bearer {MASTER_KEY}"},
                      json={"model": f"via-{kind}", "input": "hi", "stream": True}, timeout=20) as resp:
        assert resp.status_code == 200
        events = read_events(resp)
    assert_well_formed(events)
    kinds = [e["type"] for e in events]
    assert kinds.count("response.created") == 1 and "error" not in kinds
    return events


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("kind", TYPES)
def test_stream_fails_over(gw: RunningGateway, upstream: ReplayServer, kind: str, failure: str) -> None:
    _enqueue_failure(upstream, kind, failure, stream=True)
    upstream.enqueue(load(CHAT_STREAM)[0])
    events = _one_clean_stream(gw, kind)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["model"] == "p-chat/fallback-model"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == _fallback_text()
    assert len(upstream.requests) == 2 and upstream.requests[-1].path == "/v1/chat/completions"


@pytest.mark.parametrize("kind", TYPES)
def test_the_sdk_sees_one_clean_stream(gw: RunningGateway, upstream: ReplayServer, kind: str) -> None:
    upstream.enqueue(error_inside(kind))
    upstream.enqueue(load(CHAT_STREAM)[0])
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)
    with client.responses.stream(model=f"via-{kind}", input="hi") as stream:
        final = stream.get_final_response()
    assert final.model == "p-chat/fallback-model" and final.output_text == _fallback_text()


# The upstream opened an item (and its part) and then broke: nothing the client could see was
# sent yet, so the stream still fails over. (events before the cut: OpenAI created, in_progress,
# output_item.added, content_part.added; Anthropic message_start, content_block_start, ping)
OPENED_THEN_CUT = {"openai": 4, "anthropic": 3}


@pytest.mark.parametrize("kind", sorted(OPENED_THEN_CUT))
def test_a_stream_cut_after_an_empty_item_opened_fails_over(gw: RunningGateway, upstream: ReplayServer,
                                                            kind: str) -> None:
    upstream.enqueue(a_success(kind, stream=True), fail_after_events=OPENED_THEN_CUT[kind])
    upstream.enqueue(load(CHAT_STREAM)[0])
    events = _one_clean_stream(gw, kind)
    kinds = [e["type"] for e in events]
    final = events[-1]["response"]
    assert final["model"] == "p-chat/fallback-model"
    assert [a["outcome"] for a in final["routing"]["attempts"]][-1] == "ok"
    assert final["routing"]["attempts"][0]["provider"] == f"p-{kind}"
    # Only the fallback's items reached the client: none of the broken route's.
    assert kinds.count("response.output_item.added") == len(final["output"])
