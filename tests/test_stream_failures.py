"""Streams end well even when the upstream does not: an error event and response.failed, never a hang."""

from __future__ import annotations

import contextlib
import time

import httpx

from tests.conftest import MASTER_KEY, RunningGateway
from tests.replay.recordings import fixtures_root, load
from tests.replay.server import ReplayServer
from tests.sse import assert_well_formed, read_events

FIX = fixtures_root()
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


def stream(gateway: RunningGateway, model: str) -> list[dict]:
    with httpx.stream("POST", f"{gateway.url}/v1/responses", headers=AUTH, timeout=10,
                      json={"model": model, "input": "hi", "stream": True}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        return read_events(resp)


def test_upstream_dies_mid_stream_chat(gateway: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "openai-chat/vercel-ai/openai-text.chunks.txt")[0], fail_after_events=20)
    events = stream(gateway, "chat")
    assert_well_formed(events)
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]


def test_text_received_before_the_upstream_died_is_in_the_failed_response(gateway: RunningGateway,
                                                                           upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "openai-chat/vercel-ai/openai-text.chunks.txt")[0], fail_after_events=20)
    events = stream(gateway, "chat")
    received = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert received, "the stream should break after some text"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    # What had arrived is not lost: the open message, with every text delta the client received.
    messages = [item for item in failed["output"] if item["type"] == "message"]
    assert len(messages) == 1
    text = "".join(part["text"] for part in messages[0]["content"] if part["type"] == "output_text")
    assert text == received


def test_upstream_dies_mid_stream_responses(gateway: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "openai-responses/simonw-llm/test_responses_basic_streaming.yaml")[0],
                     fail_after_events=6)
    events = stream(gateway, "gpt-5.2")
    assert_well_formed(events)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]


def test_chat_stream_cut_before_finish_reason_fails(gateway: RunningGateway, upstream: ReplayServer) -> None:
    exchange = load(FIX / "openai-chat/openai-python/test_parse_nothing.e2aad469b71d.sse")[0]
    frames = exchange.frames()
    upstream.enqueue(exchange, fail_after_events=len(frames) - 3)  # cut before the finish chunk
    events = stream(gateway, "chat")
    assert_well_formed(events)
    assert events[-1]["type"] == "response.failed"


def test_client_disconnect_cancels_upstream(gateway: RunningGateway, upstream: ReplayServer) -> None:
    exchange = load(FIX / "openai-chat/vercel-ai/openai-text.chunks.txt")[0]
    upstream.enqueue(exchange, event_delay=0.05)  # ~15 s if read to the end
    start = time.monotonic()
    with httpx.stream("POST", f"{gateway.url}/v1/responses", headers=AUTH, timeout=10,
                      json={"model": "chat", "input": "hi", "stream": True}) as resp:
        for line in resp.iter_lines():
            if "output_text.delta" in line:
                break  # the client walks away mid-stream
    assert upstream.wait_for_disconnects(1, timeout=5), "the upstream request was not cancelled"
    assert time.monotonic() - start < 5


def test_client_disconnect_before_upstream_answers(gateway: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "openai-chat/vercel-ai/openai-text.json")[0], delay_before_headers=3)
    with contextlib.suppress(httpx.ReadTimeout):
        httpx.post(f"{gateway.url}/v1/responses", headers=AUTH, timeout=0.5, json={"model": "chat", "input": "hi"})
    assert upstream.wait_for_disconnects(1, timeout=5)
