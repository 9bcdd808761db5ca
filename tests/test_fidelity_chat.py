"""Chat Completions fidelity: unreadable 200 answers fail the route, `allowed_tools` is enforced,
a failed tool's output says so, and reasoning shows as a summary only when one was asked for.

Driven through a real gateway with the official `openai` SDK (and a raw HTTP client for streams);
the upstream is the replay server playing recorded Chat traffic or chunks in its exact shape.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.openai_replay_helpers import check_stream, exchanges, json_exchange, raw_stream, sdk_create, sdk_stream
from tests.replay import Exchange, ReplayServer
from tests.test_replay_openai_chat import CHAT_PATH, check_chat_request

TEXT = Path("openai-chat/vercel-ai/openai-text.chunks.txt")
TEXT_JSON = Path("openai-chat/vercel-ai/openai-text.json")
DEEPSEEK = Path("openai-chat/vercel-ai/deepseek-reasoning.chunks.txt")

CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
providers:
  first:
    type: openai-chat
    base_url: {upstream}/v1
    api_key: sk-upstream-secret-first-0000
  second:
    type: openai-chat
    base_url: {upstream}/v1
    api_key: sk-upstream-secret-second-0000
  native:
    type: openai-chat
    base_url: {upstream}/v1
    api_key: sk-upstream-secret-native-0000
    options: {{allowed_tools: native}}
models:
  two-routes:
    routes:
      - provider: first
        model: gpt-4o
      - provider: second
        model: gpt-4o
  one-route:
    routes:
      - provider: first
        model: gpt-4o
  native-chat:
    routes:
      - provider: native
        model: gpt-4o
"""


@pytest.fixture(scope="module")
def gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = Path(tmp_path_factory.mktemp("chat-fidelity-db")) / "sluice.db"
    with running_gateway(CONFIG.format(db=db, master=MASTER_KEY, upstream=upstream.url)) as running:
        yield running


@pytest.fixture
def sdk(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)


def _stream_of(chunks: list[dict[str, Any]], done: bool = True) -> Exchange:
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + ("data: [DONE]\n\n" if done else "")
    return Exchange(method="POST", path=CHAT_PATH, request_body=None, status=200,
                    headers={"content-type": "text/event-stream"}, body=body.encode(), stream=True,
                    source="synthetic")


def _text_of(rel: Path) -> str:
    """The answer text a recorded chat answer (JSON or chunks) carries."""
    exchange = exchanges(rel)[0]
    if not exchange.stream:
        return str(exchange.json()["choices"][0]["message"]["content"])
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in exchange.events() if c["choices"])


def _sent(upstream: ReplayServer) -> dict[str, Any]:
    sent = upstream.requests[-1].json
    check_chat_request(sent)  # the official spec's CreateChatCompletionRequest
    return sent


# --- 4. a 200 that is not a chat completion is this route's failure ------------------------------------
# An unreadable answer is retryable: the route is asked once more (routing.retries, default 1)
# before the next one, so each failure below is served twice.

# A Responses body where a chat completion was expected (a base_url pointing at the wrong API): no `choices`.
NOT_A_COMPLETION = {"id": "resp_1", "object": "response", "status": "completed", "output": [],
                    "usage": {"input_tokens": 5, "output_tokens": 0, "total_tokens": 5}}
# What OpenAI sends last with include_usage: usage, no choices. A stream of only this says nothing.
USAGE_ONLY = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
              "usage": {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5}}


def test_a_200_body_without_choices_fails_over_to_the_next_route(gw: RunningGateway, upstream: ReplayServer,
                                                                  sdk: openai.OpenAI) -> None:
    upstream.enqueue([json_exchange(NOT_A_COMPLETION, CHAT_PATH)] * 2 + [exchanges(TEXT_JSON)[0]])
    response, _ = sdk_create(sdk, {"model": "two-routes", "input": "Hello"})
    assert response.model == "second/gpt-4o"
    assert response.status == "completed" and response.output_text == _text_of(TEXT_JSON)
    assert len(upstream.requests) == 3
    trace = response.model_extra["routing"]["attempts"]  # type: ignore[index]
    assert [(a["provider"], a["outcome"], a["error_code"]) for a in trace] == [
        ("first", "error", "upstream_invalid_response"), ("first", "error", "upstream_invalid_response"),
        ("second", "ok", None)]


def test_a_200_body_without_choices_on_the_last_route_is_an_error(gw: RunningGateway, upstream: ReplayServer,
                                                                   sdk: openai.OpenAI) -> None:
    for body in (NOT_A_COMPLETION, {"choices": []}, [1, 2]):
        upstream.enqueue([json_exchange(body, CHAT_PATH)] * 2)  # type: ignore[arg-type]
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.responses.create(model="one-route", input="Hello")
        assert caught.value.status_code == 424  # the only route failed with a 502
        assert caught.value.body["code"] == "upstream_invalid_response"  # type: ignore[index]
        assert "not a chat completion" in caught.value.message


@pytest.mark.parametrize("chunks", [[USAGE_ONLY], [{**USAGE_ONLY, "usage": None}, USAGE_ONLY], []],
                         ids=["usage-only", "no-choices", "done-only"])
def test_a_stream_without_choices_fails_over(gw: RunningGateway, upstream: ReplayServer, sdk: openai.OpenAI,
                                             chunks: list[dict[str, Any]]) -> None:
    upstream.enqueue([_stream_of(chunks), _stream_of(chunks), exchanges(TEXT)[0]])
    _, final = sdk_stream(sdk, {"model": "two-routes", "input": "Hello"})
    assert final.model == "second/gpt-4o" and final.status == "completed"
    assert final.output_text == _text_of(TEXT)

    upstream.enqueue([_stream_of(chunks)] * 2)
    status, body, _ = raw_stream(gw.url, {"model": "one-route", "input": "Hello"})
    assert status == 424 and body[0]["error"]["code"] == "upstream_invalid_response"


# --- 7. tool_choice allowed_tools is enforced --------------------------------------------------------------

TOOLS = [{"type": "function", "name": n, "parameters": {"type": "object", "properties": {}}}
         for n in ("read", "write", "delete")]


@pytest.mark.parametrize("mode", ["auto", "required"])
def test_allowed_tools_sends_only_the_allowed_tools(gw: RunningGateway, upstream: ReplayServer, sdk: openai.OpenAI,
                                                    mode: str) -> None:
    upstream.enqueue(exchanges(TEXT_JSON)[0])
    choice = {"type": "allowed_tools", "mode": mode,
              "tools": [{"type": "function", "name": "read"}, {"type": "function", "name": "write"}]}
    sdk.responses.create(model="one-route", input="Tidy up", tools=TOOLS, tool_choice=choice)  # type: ignore[arg-type]
    sent = _sent(upstream)
    assert [t["function"]["name"] for t in sent["tools"]] == ["read", "write"]  # `delete` cannot be called
    assert sent["tool_choice"] == mode


def test_allowed_tools_leaving_none_sends_no_tools(gw: RunningGateway, upstream: ReplayServer,
                                                   sdk: openai.OpenAI) -> None:
    upstream.enqueue(exchanges(TEXT_JSON)[0])
    choice = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "absent"}]}
    sdk.responses.create(model="one-route", input="Hi", tools=TOOLS, tool_choice=choice)  # type: ignore[arg-type]
    sent = _sent(upstream)
    assert "tools" not in sent and "tool_choice" not in sent and "parallel_tool_calls" not in sent


def test_allowed_tools_native_option_uses_chats_own_choice(gw: RunningGateway, upstream: ReplayServer,
                                                           sdk: openai.OpenAI) -> None:
    """`options.allowed_tools: native`: every tool is sent (the prompt cache stays warm) and the
    subset goes in OpenAI Chat's `{"type": "allowed_tools", "allowed_tools": {mode, tools}}`."""
    upstream.enqueue(exchanges(TEXT_JSON)[0])
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "write"}]}
    sdk.responses.create(model="native-chat", input="Tidy up", tools=TOOLS, tool_choice=choice,  # type: ignore[arg-type]
                         parallel_tool_calls=False)
    sent = _sent(upstream)
    assert [t["function"]["name"] for t in sent["tools"]] == ["read", "write", "delete"]
    assert sent["tool_choice"] == {"type": "allowed_tools", "allowed_tools": {
        "mode": "required", "tools": [{"type": "function", "function": {"name": "write"}}]}}
    assert sent["parallel_tool_calls"] is False


# --- 10. a failed tool's output says so -----------------------------------------------------------------


def test_is_error_output_says_error_in_the_tool_message(gw: RunningGateway, upstream: ReplayServer,
                                                        sdk: openai.OpenAI) -> None:
    upstream.enqueue(exchanges(TEXT_JSON)[0])
    call = {"type": "function_call", "call_id": "call_1", "name": "read", "arguments": "{}"}
    call2 = {**call, "call_id": "call_2"}
    call3 = {**call, "call_id": "call_3"}
    sdk.responses.create(model="one-route", tools=TOOLS, input=[  # type: ignore[arg-type]
        {"role": "user", "content": "Read it"}, call, call2, call3,
        {"type": "function_call_output", "call_id": "call_1", "output": "file not found", "is_error": True},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "denied"}],
         "is_error": True},
        {"type": "function_call_output", "call_id": "call_3", "output": "fine", "is_error": False},
    ])
    tool_messages = [m for m in _sent(upstream)["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == ["Error: file not found", "Error: denied", "fine"]


# --- 11. reasoning shows as a summary only when a summary was asked for ---------------------------------


def _reasoning_text() -> str:
    return "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in exchanges(DEEPSEEK)[0].events())


def test_reasoning_content_is_a_summary_only_when_asked(gw: RunningGateway, upstream: ReplayServer,
                                                        sdk: openai.OpenAI) -> None:
    thought = _reasoning_text()
    assert thought
    upstream.enqueue(exchanges(DEEPSEEK)[0])
    events, final = sdk_stream(sdk, {"model": "one-route", "input": "Hi", "reasoning": {"summary": "auto"}})
    reasoning = final.output[0]
    assert reasoning.type == "reasoning"
    assert [s.text for s in reasoning.summary] == [thought]
    assert not reasoning.content
    assert "response.reasoning_summary_text.delta" in {e.type for e in events}
    assert "response.reasoning_text.delta" not in {e.type for e in events}
    assert "reasoning_effort" not in _sent(upstream)  # a summary alone asks the server for nothing

    upstream.enqueue(exchanges(DEEPSEEK)[0])
    _, plain = sdk_stream(sdk, {"model": "one-route", "input": "Hi"})
    reasoning = plain.output[0]
    assert reasoning.summary == [] and [c.text for c in reasoning.content or ()] == [thought]


def test_whole_answer_reasoning_follows_the_summary_too(gw: RunningGateway, upstream: ReplayServer,
                                                        sdk: openai.OpenAI) -> None:
    body = copy.deepcopy(exchanges(TEXT_JSON)[0].json())
    body["choices"][0]["message"]["reasoning_content"] = "Think first."
    upstream.enqueue(json_exchange(body, CHAT_PATH))
    response, _ = sdk_create(sdk, {"model": "one-route", "input": "Hi", "reasoning": {"summary": "detailed"}})
    assert [s.text for s in response.output[0].summary] == ["Think first."]
    assert response.output_text == _text_of(TEXT_JSON)

    upstream.enqueue(_stream_of([{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                  "choices": [{"index": 0, "delta": {"reasoning_content": "Think first.",
                                                                     "content": "Hello, World!"},
                                               "finish_reason": "stop"}]}]))
    _, events, _ = raw_stream(gw.url, {"model": "one-route", "input": "Hi", "reasoning": {"summary": "detailed"}})
    check_stream(events)
    assert events[-1]["response"]["output"][0]["summary"] == [{"type": "summary_text", "text": "Think first."}]
