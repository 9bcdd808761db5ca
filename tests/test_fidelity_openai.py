"""OpenAI Responses upstream fidelity: only what the API takes is sent, and what it could not be
told (a limit under its minimum, a failed tool) is still honoured.

The gateway is driven with the official `openai` SDK (and a raw HTTP client for incomplete
streams, which the SDK's stream helper does not finalize); the upstream replays recorded
Responses traffic (simonw-llm's "pong" exchanges: 5 output tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from tests.openai_replay_helpers import check_stream, exchanges, raw_stream, sdk_create, sdk_stream
from tests.replay import ReplayServer

MODEL = "gpt-5.2"
WHOLE = Path("openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml")
STREAMED = Path("openai-responses/simonw-llm/test_responses_basic_streaming.yaml")
RECORDED_OUTPUT_TOKENS = 5
PONG = {"model": MODEL, "input": "Reply with exactly: pong", "reasoning": {"effort": "low"}, "store": False}


def _recorded_usage() -> dict[str, Any]:
    usage = exchanges(WHOLE)[0].json()["usage"]
    assert usage["output_tokens"] == RECORDED_OUTPUT_TOKENS
    return dict(usage)


# --- 9. max_output_tokens under the API's minimum of 16 ---------------------------------------------------


@pytest.mark.parametrize(("asked", "sent"), [(1, 16), (4, 16), (15, 16), (16, 16), (300, 300)])
def test_a_limit_under_16_is_sent_as_16(gateway: Any, upstream: ReplayServer, client: openai.OpenAI,
                                        asked: int, sent: int) -> None:
    upstream.enqueue(exchanges(WHOLE)[0])
    response, _ = sdk_create(client, {**PONG, "max_output_tokens": asked})
    assert upstream.requests[-1].json["max_output_tokens"] == sent
    assert response.max_output_tokens == asked  # the Response reports what the client asked for


def test_an_answer_longer_than_asked_is_incomplete(gateway: Any, upstream: ReplayServer,
                                                   client: openai.OpenAI) -> None:
    """5 tokens came back for a limit of 4: the Response says so, as OpenAI would have for 4."""
    _recorded_usage()
    upstream.enqueue(exchanges(WHOLE)[0])
    response, _ = sdk_create(client, {**PONG, "max_output_tokens": RECORDED_OUTPUT_TOKENS - 1})
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "pong"  # kept whole: Sluice cannot cut tokens
    assert response.usage is not None and response.usage.output_tokens == RECORDED_OUTPUT_TOKENS

    upstream.enqueue(exchanges(STREAMED)[0])
    status, events, _ = raw_stream(gateway.url, {**PONG, "max_output_tokens": RECORDED_OUTPUT_TOKENS - 1})
    assert status == 200
    check_stream(events)
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["max_output_tokens"] == RECORDED_OUTPUT_TOKENS - 1


def test_an_answer_within_the_small_limit_completes(gateway: Any, upstream: ReplayServer,
                                                    client: openai.OpenAI) -> None:
    upstream.enqueue(exchanges(WHOLE)[0])
    response, _ = sdk_create(client, {**PONG, "max_output_tokens": RECORDED_OUTPUT_TOKENS})
    assert response.status == "completed" and response.incomplete_details is None
    upstream.enqueue(exchanges(STREAMED)[0])
    _, final = sdk_stream(client, {**PONG, "max_output_tokens": RECORDED_OUTPUT_TOKENS})
    assert final.status == "completed"


# --- 9. Chat-only fields, and stream_options without a stream ------------------------------------------


def test_chat_only_fields_are_not_forwarded(gateway: Any, upstream: ReplayServer, client: openai.OpenAI) -> None:
    """The Responses API has no frequency/presence penalties, and takes `stream_options` only with
    `stream: true`: neither reaches OpenAI where it does not belong."""
    extra = {"frequency_penalty": 0.5, "presence_penalty": -0.5, "stream_options": {"include_obfuscation": False}}
    upstream.enqueue(exchanges(WHOLE)[0])
    client.responses.create(**PONG, extra_body=extra)  # type: ignore[arg-type]
    sent = upstream.requests[-1].json
    assert not {"frequency_penalty", "presence_penalty", "stream_options"} & set(sent)

    upstream.enqueue(exchanges(STREAMED)[0])
    sdk_stream(client, {**PONG, **extra})
    sent = upstream.requests[-1].json
    assert sent["stream"] is True and sent["stream_options"] == {"include_obfuscation": False}
    assert not {"frequency_penalty", "presence_penalty"} & set(sent)


# --- 10. is_error, which OpenAI has no field for, is said in the output ---------------------------------


def test_failed_tool_outputs_say_error(gateway: Any, upstream: ReplayServer, client: openai.OpenAI) -> None:
    calls = [{"type": "function_call", "call_id": f"c{i}", "name": "f", "arguments": "{}"} for i in range(5)]
    image = {"type": "input_image", "image_url": "https://example.com/x.png"}
    outputs = [
        {"type": "function_call_output", "call_id": "c0", "output": "disk full", "is_error": True},
        {"type": "function_call_output", "call_id": "c1", "output": "Error: already said", "is_error": True},
        {"type": "function_call_output", "call_id": "c2", "output": [image], "is_error": True},
        {"type": "function_call_output", "call_id": "c3", "output": [{"type": "input_text", "text": "nope"}, image],
         "is_error": True},
        {"type": "function_call_output", "call_id": "c4", "output": "ok", "is_error": False},
    ]
    upstream.enqueue(exchanges(WHOLE)[0])
    client.responses.create(model=MODEL, input=[{"role": "user", "content": "go"}, *calls, *outputs],  # type: ignore[list-item]
                            tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}])
    sent = [i for i in upstream.requests[-1].json["input"] if i["type"] == "function_call_output"]
    assert all("is_error" not in item for item in sent)
    assert [item["output"] for item in sent] == [
        "Error: disk full",
        "Error: already said",
        [{"type": "input_text", "text": "Error:"}, image],
        [{"type": "input_text", "text": "Error: nope"}, image],
        "ok",
    ]
