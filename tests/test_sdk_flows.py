"""The official `openai` SDK against Sluice, through both OpenAI-family upstream types.

Each flow replays real recorded provider traffic; the SDK's own parsing is the first assertion.
"""

from __future__ import annotations

import json

import openai
import pydantic
import pytest

from tests.replay.recordings import fixtures_root, load
from tests.replay.server import ReplayServer

FIX = fixtures_root()

# (model, two-turn tool loop ending in structured output, streamed two-turn tool loop)
UPSTREAMS = {
    "openai": ("gpt-5.2", "openai-responses/pydantic-ai/test_native_output.yaml",
               "openai-responses/pydantic-ai/test_openai_responses_stream.yaml"),
    "openai-chat": ("chat-model", "openai-chat/pydantic-ai/test_openai_native_output.yaml",
                    "openai-chat/pydantic-ai/test_run_stream_sync_streams_real_model.yaml"),
}

GET_USER_COUNTRY = {"type": "function", "name": "get_user_country", "description": "",
                    "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
                    "strict": False}


class CityLocation(pydantic.BaseModel):
    city: str
    country: str


@pytest.mark.parametrize("upstream_type", UPSTREAMS)
def test_create(client: openai.OpenAI, upstream: ReplayServer, upstream_type: str) -> None:
    model = UPSTREAMS[upstream_type][0]
    if upstream_type == "openai":
        exchange = load(FIX / "openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml")[0]
        expected = exchange.json()["output"][-1]["content"][0]["text"]
    else:
        exchange = load(FIX / "openai-chat/vercel-ai/openai-text.json")[0]
        expected = exchange.json()["choices"][0]["message"]["content"]
    upstream.enqueue(exchange)

    response = client.responses.create(model=model, input="Tell me something", instructions="Be brief.")

    assert response.status == "completed"
    assert response.output_text == expected
    assert response.usage is not None and response.usage.total_tokens > 0
    assert response.model.split("/")[0] in ("replay-openai", "replay-chat")
    sent = upstream.requests[-1].json
    if upstream_type == "openai":
        assert sent["instructions"] == "Be brief." and sent["model"] == "gpt-5.2"
    else:
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize("upstream_type", UPSTREAMS)
def test_stream_matches_final_response(client: openai.OpenAI, upstream: ReplayServer, upstream_type: str) -> None:
    model = UPSTREAMS[upstream_type][0]
    path = ("openai-responses/simonw-llm/test_responses_basic_streaming.yaml" if upstream_type == "openai"
            else "openai-chat/openai-python/test_parse_nothing.e2aad469b71d.sse")
    upstream.enqueue(load(FIX / path)[0])

    deltas = []
    with client.responses.stream(model=model, input="Say hi") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()

    assert deltas, "the stream carried no text"
    assert final.output_text == "".join(deltas)
    assert final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0
    assert final.cost["total"] > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("upstream_type", UPSTREAMS)
def test_two_turn_tool_loop_then_parse(client: openai.OpenAI, upstream: ReplayServer, upstream_type: str) -> None:
    model, cassette, _ = UPSTREAMS[upstream_type]
    first, second = load(FIX / cassette)
    upstream.enqueue(first)
    question = "What is the largest city in the user country?"

    turn1 = client.responses.parse(model=model, input=question, tools=[GET_USER_COUNTRY], text_format=CityLocation)

    calls = [item for item in turn1.output if item.type == "function_call"]
    assert [call.name for call in calls] == ["get_user_country"]
    assert json.loads(calls[0].arguments) == {}

    upstream.enqueue(second)
    history = [{"role": "user", "content": question}, *[item.model_dump(exclude_none=True) for item in turn1.output],
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Mexico"}]
    turn2 = client.responses.parse(model=model, input=history, tools=[GET_USER_COUNTRY], text_format=CityLocation)

    assert turn2.output_parsed == CityLocation(city="Mexico City", country="Mexico")
    sent = upstream.requests[-1].json
    if upstream_type == "openai":
        kinds = [item.get("type", "message") for item in sent["input"]]
        assert kinds == ["message", "function_call", "function_call_output"]
        assert sent["text"]["format"]["type"] == "json_schema"
    else:
        roles = [message["role"] for message in sent["messages"]]
        assert roles == ["user", "assistant", "tool"]
        assert sent["messages"][1]["tool_calls"][0]["id"] == calls[0].call_id
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "Mexico"}
        assert sent["response_format"]["type"] == "json_schema"
        assert sent["response_format"]["json_schema"]["name"] == "CityLocation"


@pytest.mark.parametrize("upstream_type", UPSTREAMS)
def test_streamed_tool_loop(client: openai.OpenAI, upstream: ReplayServer, upstream_type: str) -> None:
    model, _, cassette = UPSTREAMS[upstream_type]
    first, second = load(FIX / cassette)
    tools_sent = first.request_body.get("tools") or []
    tools = [
        {"type": "function", "name": tool["function"]["name"], "description": tool["function"].get("description") or "",
         "parameters": tool["function"]["parameters"]} if "function" in tool
        else {k: v for k, v in tool.items() if v is not None}
        for tool in tools_sent
    ]
    upstream.enqueue(first)
    with client.responses.stream(model=model, input="question", tools=tools) as stream:
        arg_deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        turn1 = stream.get_final_response()
    calls = [item for item in turn1.output if item.type == "function_call"]
    assert calls and "".join(arg_deltas) == "".join(call.arguments for call in calls)

    upstream.enqueue(second)
    history = [{"role": "user", "content": "question"}, *[i.model_dump(exclude_none=True) for i in turn1.output],
               *[{"type": "function_call_output", "call_id": c.call_id, "output": "42"} for c in calls]]
    with client.responses.stream(model=model, input=history, tools=tools) as stream:
        turn2 = stream.get_final_response()
    assert turn2.status == "completed"
    assert turn2.output_text
