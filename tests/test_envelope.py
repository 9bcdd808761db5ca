"""The Response envelope is the same whatever route served it, and its accounting is honest."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import MASTER_KEY, RunningGateway
from tests.replay.recordings import fixtures_root, load
from tests.replay.server import ReplayServer

FIX = fixtures_root()
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
ANSWERS = {"gpt-5.2": FIX / "openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml",
           "chat": FIX / "openai-chat/vercel-ai/openai-text.json"}
ECHOED = ("temperature", "top_p", "service_tier", "text", "reasoning", "truncation", "frequency_penalty",
          "presence_penalty", "prompt", "conversation", "max_output_tokens", "top_logprobs", "user", "store")


def create(gateway: RunningGateway, upstream: ReplayServer, model: str, **fields: Any) -> dict[str, Any]:
    upstream.enqueue(load(ANSWERS[model])[0])
    resp = httpx.post(f"{gateway.url}/v1/responses", headers=AUTH, timeout=20,
                      json={"model": model, "input": "hi", **fields})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_every_route_echoes_the_same_request_fields(gateway: RunningGateway, upstream: ReplayServer) -> None:
    recorded = load(ANSWERS["gpt-5.2"])[0].json()
    assert recorded["temperature"] == 1.0 and recorded["service_tier"] == "default"  # OpenAI fills these in
    by_route = {model: create(gateway, upstream, model) for model in ANSWERS}
    openai_route, chat_route = by_route["gpt-5.2"], by_route["chat"]
    assert {k: openai_route[k] for k in ECHOED} == {k: chat_route[k] for k in ECHOED}
    assert openai_route["temperature"] is None and openai_route["service_tier"] is None
    assert openai_route["text"] == {"format": {"type": "text"}}
    for field in ("frequency_penalty", "presence_penalty", "prompt", "conversation"):
        assert field in openai_route and openai_route[field] is None


def test_what_the_client_asked_is_echoed_and_what_was_not_applied_is_not(gateway: RunningGateway,
                                                                         upstream: ReplayServer) -> None:
    asked = {"temperature": 0.3, "top_p": 0.9, "frequency_penalty": 0.5, "presence_penalty": -0.5,
             "conversation": "conv_1", "service_tier": "flex", "truncation": "auto", "background": False}
    for model in ANSWERS:
        response = create(gateway, upstream, model, **asked)
        assert (response["temperature"], response["top_p"]) == (0.3, 0.9)
        assert (response["frequency_penalty"], response["presence_penalty"]) == (0.5, -0.5)
        assert response["conversation"] == {"id": "conv_1"}
        # Accepted and ignored (the reference: unsupported): nothing applied a tier or truncation.
        assert response["service_tier"] is None and response["truncation"] == "disabled"


def test_web_searches_are_counted_on_an_openai_route(gateway: RunningGateway, upstream: ReplayServer) -> None:
    exchange = load(FIX / "openai-responses/vercel-ai/openai-web-search-tool.1.json")[0]
    searches = sum(1 for item in exchange.json()["output"] if item["type"] == "web_search_call")
    assert searches and "tool_calls" not in exchange.json()["usage"]
    upstream.enqueue(exchange)
    resp = httpx.post(f"{gateway.url}/v1/responses", headers=AUTH, timeout=20,
                      json={"model": "gpt-5.2", "input": "news?", "tools": [{"type": "web_search"}]})
    assert resp.json()["usage"]["tool_calls"] == {"web_search": searches}


@pytest.mark.parametrize("model", ["chat", "replay-chat/unpriced-model"])
def test_a_stream_broken_after_content_still_reports_usage(gateway: RunningGateway, upstream: ReplayServer,
                                                           model: str) -> None:
    upstream.enqueue(load(FIX / "openai-chat/vercel-ai/openai-text.chunks.txt")[0], fail_after_events=20)
    with httpx.stream("POST", f"{gateway.url}/v1/responses", headers=AUTH, timeout=20,
                      json={"model": model, "input": "Invent a new holiday and describe its traditions.",
                            "stream": True}) as resp:
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    failed = events[-1]["response"]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert failed["status"] == "failed" and text
    assert failed["usage"]["output_tokens"] == -(-len(text) // 4)  # estimated: 4 characters a token
    assert failed["usage"]["input_tokens"] >= 1
    if model == "chat":
        assert failed["cost"]["total"] > 0
    else:
        assert failed["cost"]["total"] is None  # an unpriced route: unknown, not free
