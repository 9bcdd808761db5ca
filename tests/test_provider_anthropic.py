"""The Anthropic Messages adapter, end to end: openai SDK -> Sluice -> replayed Anthropic traffic.

Every recording under shared/fixtures/anthropic/ is replayed (streamed ones also as the equivalent
whole message, to check that a stream's final response equals the non-streaming one); what Sluice
sends upstream is checked against Anthropic's official OpenAPI schema and, where a recording holds
the request, against the recorded request. Hand-made recordings for missing scenarios are under
tests/recordings/anthropic/ (see PROVENANCE.md there).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from sluice.canonical.reasoning import seal, unseal
from tests.anthropic_spec import problems
from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.openai_replay_helpers import client_error
from tests.replay import Exchange, ReplayServer, all_recordings, fixtures_root, load

ROOT = fixtures_root()

OWN = Path(__file__).parent / "recordings" / "anthropic"
MODEL = "claude-sonnet-4-5"
PRICE = {"input": 3.0, "cached_input": 0.3, "cache_write": 3.75, "output": 15.0}
CAPS = "[tools, parallel_tool_calls, images, files, json_schema, reasoning, prompt_caching, temperature]"

CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
# The adapter's translation is what this file checks: one call per request, one recorded error
# after another through one route — no retry on the same route (tests/test_failover_errors.py),
# no cooldown answering for the route (tests/test_affinity.py, tests/test_cooldowns.py).
routing: {{retries: 0, cooldown: {{enabled: false}}}}
providers:
  claude:
    type: anthropic
    base_url: {upstream}
    api_key: sk-ant-test
  claude-tool:
    type: anthropic
    base_url: {upstream}/v1
    api_key: sk-ant-test
    options: {{structured_output: tool}}
  claude-adaptive:
    type: anthropic
    base_url: {upstream}
    api_key: sk-ant-test
    options: {{thinking: adaptive}}
models:
  claude-sonnet-4-5:
    capabilities: {caps}
    routes:
      - provider: claude
        model: claude-sonnet-4-5
        price: {{input: 3, cached_input: 0.3, cache_write: 3.75, output: 15}}
  claude-json-tool:
    capabilities: {caps}
    routes:
      - provider: claude-tool
        model: claude-haiku-4-5
  claude-adaptive:
    capabilities: {caps}
    routes:
      - provider: claude-adaptive
        model: claude-opus-4-6
"""

_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = Path(tmp_path_factory.mktemp("anthropic-db")) / "sluice.db"
    text = CONFIG.format(db=db, master=MASTER_KEY, upstream=upstream.url, caps=CAPS)
    with running_gateway(text) as running:
        yield running


@pytest.fixture
def client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)


# --- helpers ---------------------------------------------------------------------------------------


def sent(upstream: ReplayServer, index: int = -1) -> dict[str, Any]:
    """What Sluice sent upstream, after checking it against Anthropic's schema and headers."""
    request = upstream.requests[index]
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert problems(request.json) == []
    return request.json


def json_exchange(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Exchange:
    return Exchange("POST", "/v1/messages", None, status, {"content-type": "application/json", **(headers or {})},
                    json.dumps(body).encode(), False)


def accumulate(exchange: Exchange) -> dict[str, Any]:
    """The whole Message a streamed recording amounts to (what a non-streaming call returns)."""
    message: dict[str, Any] = {}
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for event in exchange.events():
        kind = event["type"]
        if kind == "message_start" and not message:
            message = {**event["message"], "usage": dict(event["message"]["usage"])}
        elif kind == "content_block_start":
            blocks[event["index"]] = dict(event["content_block"])
        elif kind == "content_block_delta":
            block, delta = blocks[event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] += delta["signature"]
            elif delta["type"] == "input_json_delta":
                partial[event["index"]] = partial.get(event["index"], "") + delta["partial_json"]
            elif delta["type"] == "citations_delta":
                block.setdefault("citations", []).append(delta["citation"])
        elif kind == "content_block_stop" and event["index"] in partial:
            text = partial.pop(event["index"])
            blocks[event["index"]]["input"] = json.loads(text) if text else {}
        elif kind == "message_delta":
            message["stop_reason"] = event["delta"]["stop_reason"]
            message["stop_details"] = event["delta"].get("stop_details")
            message["usage"].update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message


def to_responses(body: dict[str, Any]) -> dict[str, Any]:
    """The Responses request a client would send for a recorded Anthropic request."""
    req: dict[str, Any] = {"model": MODEL, "max_output_tokens": body["max_tokens"]}
    system = body.get("system")
    if system:
        req["instructions"] = system if isinstance(system, str) else "".join(b["text"] for b in system)
    items: list[dict[str, Any]] = []
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        part_type = "output_text" if message["role"] == "assistant" else "input_text"
        for block in content:
            if block["type"] == "text":
                part = {"type": part_type, "text": block["text"]}
                last = items[-1] if items else None
                if last is not None and last.get("type") == "message" and last["role"] == message["role"]:
                    last["content"].append(part)
                else:
                    items.append({"type": "message", "role": message["role"], "content": [part]})
            elif block["type"] == "tool_use":
                items.append({"type": "function_call", "call_id": block["id"], "name": block["name"],
                              "arguments": json.dumps(block["input"])})
            elif block["type"] == "tool_result":
                output = block.get("content", "")
                item = {"type": "function_call_output", "call_id": block["tool_use_id"], "output": output}
                if "is_error" in block:
                    item["is_error"] = block["is_error"]
                items.append(item)
            elif block["type"] == "thinking":
                state = {"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]}
                items.append({"type": "reasoning", "summary": [{"type": "summary_text", "text": block["thinking"]}],
                              "encrypted_content": seal("anthropic", state)})
    req["input"] = items
    if body.get("tools"):
        req["tools"] = [{"type": "function", "name": t["name"], "description": t.get("description", ""),
                         "parameters": t["input_schema"]} for t in body["tools"]]
    choice = body.get("tool_choice")
    if choice:
        req["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}.get(choice["type"]) or {
            "type": "function", "name": choice.get("name")}
    if body.get("thinking"):
        budget = body["thinking"].get("budget_tokens", 8192)
        req["reasoning"] = {"effort": "minimal" if budget <= 1024 else "low" if budget <= 2048 else "medium"}
        req["include"] = ["reasoning.encrypted_content"]
    elif body.get("temperature") is not None:
        req["temperature"] = body["temperature"]
    fmt = (body.get("output_config") or {}).get("format")
    if fmt:
        req["text"] = {"format": {"type": "json_schema", "name": "output", "schema": fmt["schema"]}}
    if body.get("cache_control"):
        req["cache_control"] = body["cache_control"]
    return req


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def assert_matches_recorded(sent_body: dict[str, Any], recorded: dict[str, Any]) -> None:
    """The translation of a recorded conversation is the recorded request (Sluice-independent fields aside)."""
    assert [(m["role"], _blocks(m["content"])) for m in sent_body["messages"]] == [
        (m["role"], _blocks(m["content"])) for m in recorded["messages"]]
    assert sent_body["max_tokens"] == recorded["max_tokens"]
    if recorded.get("system"):
        assert "".join(b["text"] for b in sent_body["system"]) == "".join(
            b["text"] for b in _blocks(recorded["system"]))
    if recorded.get("tools"):
        assert sent_body["tools"] == [{k: v for k, v in t.items() if v != ""} for t in recorded["tools"]]
    if recorded.get("tool_choice"):
        assert sent_body["tool_choice"] == recorded["tool_choice"]
    if recorded.get("thinking"):
        assert sent_body["thinking"]["type"] == recorded["thinking"]["type"]
        assert "temperature" not in sent_body  # Anthropic rejects sampling parameters with thinking
    elif recorded.get("temperature") is not None:
        assert sent_body["temperature"] == recorded["temperature"]
    if (recorded.get("output_config") or {}).get("format"):
        assert sent_body["output_config"]["format"] == recorded["output_config"]["format"]
    assert sent_body.get("cache_control") == recorded.get("cache_control")


def sdk_compatible(data: dict[str, Any]) -> dict[str, Any]:
    """Add `usage.input_tokens_details.cache_write_tokens`, which the installed openai SDK requires.

    Sluice's canonical usage (canonical/response.py `normalize_usage`, a shared file) reports cache
    writes only as `cached_tokens_created`; until it also sends OpenAI's name, validation needs this.
    """
    response = data.get("response") if isinstance(data.get("response"), dict) else data
    details = ((response.get("usage") or {}).get("input_tokens_details")) if isinstance(response, dict) else None
    if isinstance(details, dict) and "cache_write_tokens" not in details:
        details["cache_write_tokens"] = details.get("cached_tokens_created", 0)
    return data


def _sdk_args(req: dict[str, Any]) -> dict[str, Any]:
    # Sluice's request extensions are not parameters of the SDK's methods.
    if "cache_control" in req:
        req = {**req, "extra_body": {"cache_control": req["cache_control"]}}
        del req["cache_control"]
    return req


def create(client: openai.OpenAI, **req: Any) -> tuple[Response, dict[str, Any]]:
    """Non-streaming call; returns the SDK-validated Response and the raw JSON (with `cost`)."""
    raw = client.responses.with_raw_response.create(**_sdk_args(req))
    body = json.loads(raw.http_response.text)
    return Response.model_validate(sdk_compatible(body)), body


def stream(client: openai.OpenAI, **req: Any) -> tuple[Response, list[Any]]:
    with client.responses.stream(**_sdk_args(req)) as events_stream:
        events = list(events_stream)
        # The SDK only builds a final response from response.completed; an incomplete one is in its event.
        final = events_stream.get_final_response() if events[-1].type == "response.completed" else events[-1].response
    for event in events:
        _EVENT.validate_python(sdk_compatible(event.to_dict(warnings=False)))
    numbers = [event.sequence_number for event in events]
    assert numbers == list(range(len(events)))
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    return Response.model_validate(sdk_compatible(final.to_dict(warnings=False))), events


def normalized(response: Response) -> list[dict[str, Any]]:
    """Output without the ids minted per call; function arguments compared as JSON values."""
    out = []
    for item in response.output:
        data = item.to_dict(warnings=False)
        data.pop("id", None)
        for part in data.get("content") or ():
            part.pop("parsed", None)  # the SDK's own fields on streamed (parsed) responses
        data.pop("parsed_arguments", None)
        if data["type"] == "function_call" and response.status == "completed":
            data["arguments"] = json.loads(data["arguments"])
        elif data["type"] == "function_call":
            data.pop("arguments")  # truncated by max_tokens: the stream has a fragment, nothing to compare
        out.append(data)
    return out


def expected_usage(usage: dict[str, Any]) -> dict[str, int]:
    read = usage.get("cache_read_input_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + read + written
    return {"input": prompt, "read": read, "written": written, "output": usage["output_tokens"]}


def assert_usage(response: Response, body: dict[str, Any] | None, usage: dict[str, Any]) -> None:
    want = expected_usage(usage)
    got = response.usage
    assert got is not None
    assert got.input_tokens == want["input"]
    assert got.input_tokens_details.cached_tokens == want["read"]
    assert got.input_tokens_details.model_extra["cached_tokens_created"] == want["written"]
    assert got.output_tokens == want["output"]
    assert got.total_tokens == want["input"] + want["output"]
    if body is not None:
        cost = ((want["input"] - want["read"] - want["written"]) * PRICE["input"] + want["read"] * PRICE["cached_input"]
                + want["written"] * PRICE["cache_write"] + want["output"] * PRICE["output"]) / 1e6
        assert body["cost"]["total"] == pytest.approx(cost)


# --- every recording --------------------------------------------------------------------------------


def _replay_error(client: openai.OpenAI, upstream: ReplayServer, ex: Exchange, req: dict[str, Any]) -> None:
    upstream.enqueue(ex)
    with pytest.raises(openai.APIStatusError) as info:
        if req.get("stream"):
            stream(client, **{k: v for k, v in req.items() if k != "stream"})
        else:
            create(client, **req)
    error = json.loads(ex.body)["error"]
    # What the client gets from its only route's error (529 is the adapter's 503): docs/routing.md.
    assert info.value.status_code == client_error(503 if ex.status == 529 else ex.status, None)[0]
    assert error["message"] in info.value.message
    sent(upstream)


def _replay(client: openai.OpenAI, upstream: ReplayServer, ex: Exchange) -> None:
    recorded = ex.request_body
    req = to_responses(recorded) if recorded else {"model": MODEL, "input": "Hello"}
    if recorded and recorded.get("stream"):
        req["stream"] = True
    if ex.status != 200:
        _replay_error(client, upstream, ex, req)
        return
    req.pop("stream", None)
    if ex.stream:
        upstream.enqueue(ex)
        final, _ = stream(client, **req)
        streamed_body = sent(upstream)
        assert streamed_body["stream"] is True
        message = accumulate(ex)
        upstream.enqueue(json_exchange(message))
        plain, body = create(client, **req)
        assert normalized(final) == normalized(plain)
        assert (final.status, final.incomplete_details, final.usage) == (plain.status, plain.incomplete_details,
                                                                         plain.usage)
        assert_usage(final, None, message["usage"])
    else:
        upstream.enqueue(ex)
        plain, body = create(client, **req)
        message = json.loads(ex.body)
    sent_body = sent(upstream)
    assert "stream" not in sent_body
    if recorded:
        assert_matches_recorded(sent_body, recorded)
    assert_usage(plain, body, message["usage"])
    assert plain.model == f"claude/{MODEL}"
    expected_status = "incomplete" if message["stop_reason"] in ("max_tokens", "pause_turn") else "completed"
    assert plain.status == expected_status


@pytest.mark.parametrize("path", all_recordings("anthropic"), ids=lambda p: str(p.relative_to(ROOT)))
def test_replay_recording(client: openai.OpenAI, upstream: ReplayServer, path: Path) -> None:
    for ex in load(path):
        _replay(client, upstream, ex)


@pytest.mark.parametrize("name", ["tool-loop-thinking.1.sse", "tool-loop-thinking.2.sse"])
def test_replay_own_recording(client: openai.OpenAI, upstream: ReplayServer, name: str) -> None:
    for ex in load(OWN / name, provider="anthropic"):
        _replay(client, upstream, ex)


# --- what particular recordings must produce --------------------------------------------------------


def _fixture(rel: str) -> list[Exchange]:
    return load(ROOT / "anthropic" / rel)


def test_text_stream_events(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(_fixture("vercel-ai/anthropic-text.chunks.txt"))
    final, events = stream(client, model=MODEL, input="Hello")
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert final.output_text == "Hello! I'm doing well, thank you for asking. How are you doing today? Is there " \
                                "anything I can help you with?"
    assert next(e.delta for e in events if e.type == "response.output_text.delta") == "Hello"


def test_usage_in_message_delta_and_duplicate_message_start(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(_fixture("vercel-ai/anthropic-message-delta-input-tokens.chunks.txt"))
    final, _ = stream(client, model=MODEL, input="ping")
    assert (final.usage.input_tokens, final.usage.output_tokens) == (61, 2)  # message_delta's counts win
    assert final.output_text == "pong"
    upstream.enqueue(_fixture("vercel-ai/duplicate-message-start.chunks.txt"))
    final, events = stream(client, model=MODEL, input="hi")
    assert final.output_text == "Hello, World!"
    assert sum(e.type == "response.output_item.added" for e in events) == 1
    assert (final.usage.input_tokens, final.usage.output_tokens) == (17, 227)


def test_prompt_cache_usage_and_cost(client: openai.OpenAI, upstream: ReplayServer) -> None:
    ex = _fixture("vercel-ai/anthropic-code-execution-20260120-prompt-cache.1.chunks.txt")[0]
    usage = accumulate(ex)["usage"]
    upstream.enqueue(ex)
    final, _ = stream(client, model=MODEL, input="Compute the squares")
    assert usage["cache_creation_input_tokens"] > 0
    assert final.usage.input_tokens == usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage[
        "cache_read_input_tokens"]
    assert final.usage.input_tokens_details.cached_tokens == usage["cache_read_input_tokens"]
    assert final.usage.input_tokens_details.model_extra["cached_tokens_created"] == usage["cache_creation_input_tokens"]
    # Code execution (bash here) comes back as code_interpreter_call items, then the answer's text.
    assert [item.type for item in final.output] == ["code_interpreter_call", "code_interpreter_call", "message"]
    first, second = final.output[0], final.output[1]
    assert first.status == "completed" and first.container_id == "anthropic"
    assert first.outputs[0].logs.startswith("1: 1\n2: 4\n")
    assert second.outputs[0].logs == "Sum: 650\n"
    assert "650" in final.output_text


def test_cache_real_api_two_turns(client: openai.OpenAI, upstream: ReplayServer) -> None:
    _, second = _fixture("pydantic-ai/test_anthropic_cache_real_api.yaml")
    upstream.enqueue(second)
    response, body = create(client, **to_responses(second.request_body))
    assert response.usage.input_tokens == 3 + 1111 + 418
    assert response.usage.input_tokens_details.cached_tokens == 1111
    assert body["cost"]["total"] == pytest.approx((3 * 3 + 1111 * 0.3 + 418 * 3.75 + 33 * 15) / 1e6)
    assert sent(upstream)["cache_control"] == {"type": "ephemeral", "ttl": "5m"}


def test_thinking_stream_to_reasoning_summary(client: openai.OpenAI, upstream: ReplayServer) -> None:
    ex = _fixture("pydantic-ai/test_anthropic_model_thinking_part_stream.yaml")[0]
    thinking = accumulate(ex)["content"][0]
    upstream.enqueue(ex)
    final, events = stream(client, model=MODEL, input="How do I cross the street?",
                           reasoning={"effort": "low", "summary": "auto"})
    reasoning = final.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.summary[0].text == thinking["thinking"]
    assert reasoning.encrypted_content is None  # not asked for
    assert "response.reasoning_summary_text.delta" in {e.type for e in events}
    body = sent(upstream)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] > 2048
    # With include, the signature travels sealed.
    upstream.enqueue(ex)
    final, _ = stream(client, model=MODEL, input="How do I cross the street?", reasoning={"effort": "low"},
                      include=["reasoning.encrypted_content"])
    state = unseal(final.output[0].encrypted_content, "anthropic")
    assert state == {"type": "thinking", "thinking": thinking["thinking"], "signature": thinking["signature"]}


def test_redacted_thinking_sealed_and_sent_back(client: openai.OpenAI, upstream: ReplayServer) -> None:
    ex = _fixture("pydantic-ai/test_anthropic_model_thinking_part_redacted_stream.yaml")[0]
    blocks = accumulate(ex)["content"]
    upstream.enqueue(ex)
    final, _ = stream(client, model=MODEL, input="magic", reasoning={"effort": "minimal"},
                      include=["reasoning.encrypted_content"])
    assert [item.type for item in final.output] == ["reasoning", "reasoning", "message"]
    assert [unseal(item.encrypted_content, "anthropic")["data"] for item in final.output[:2]] == [
        b["data"] for b in blocks[:2]]
    upstream.enqueue(json_exchange(accumulate(_fixture("vercel-ai/anthropic-text.chunks.txt")[0])))
    history = [{"role": "user", "content": "magic"}, *[item.to_dict() for item in final.output],
               {"role": "user", "content": "and now?"}]
    create(client, model=MODEL, input=history, reasoning={"effort": "minimal"})
    assistant = sent(upstream)["messages"][1]
    assert [b["type"] for b in assistant["content"]] == ["redacted_thinking", "redacted_thinking", "text"]
    assert assistant["content"][0]["data"] == blocks[0]["data"]


def test_web_search_call_and_citations(client: openai.OpenAI, upstream: ReplayServer) -> None:
    ex = _fixture("vercel-ai/anthropic-web-search-tool.1.chunks.txt")[0]
    upstream.enqueue(ex)
    final, events = stream(client, model=MODEL, input="Tech news today?", tools=[{"type": "web_search"}],
                           include=["web_search_call.action.sources"])
    call = final.output[0]
    assert call.type == "web_search_call" and call.status == "completed"
    assert call.action.query == "tech news today September 26 2025"
    assert len(call.action.sources) == 10
    message = final.output[1]
    text = message.content[0]
    assert text.annotations
    for annotation in text.annotations:
        assert annotation.type == "url_citation"
        assert 0 <= annotation.start_index < annotation.end_index <= len(text.text)
    assert "response.output_text.annotation.added" in {e.type for e in events}
    assert final.usage.model_extra.get("tool_calls") == {"web_search": 1}
    body = sent(upstream)
    assert body["tools"] == [{"type": "web_search_20250305", "name": "web_search"}]


def test_mcp_blocks_to_mcp_call(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(_fixture("vercel-ai/anthropic-mcp.1.chunks.txt"))
    final, _ = stream(client, model=MODEL, input="echo hello world")
    call = final.output[0]
    assert (call.type, call.server_label, call.name, json.loads(call.arguments), call.output) == (
        "mcp_call", "echo", "echo", {"message": "hello world"}, "Tool echo: hello world")


def test_refusal_is_a_completed_refusal_part(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(_fixture("vercel-ai/anthropic-refusal.json"))
    response, _ = create(client, model=MODEL, input="bad")
    assert response.status == "completed"
    part = response.output[0].content[0]
    assert part.type == "refusal" and "cyber" in part.refusal
    upstream.enqueue(_fixture("anthropic-sdk-python/stream-a-refusal.sse"))
    final, events = stream(client, model=MODEL, input="what is an eclipse, claudius?")
    assert [p.type for p in final.output[-1].content] == ["output_text", "refusal"]
    assert "response.refusal.delta" in {e.type for e in events}


def test_max_tokens_is_incomplete(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(_fixture("anthropic-sdk-python/incomplete_partial_json_response.txt"))
    final, events = stream(client, model=MODEL, input="write a tax guide")
    assert final.status == "incomplete"
    assert final.incomplete_details.reason == "max_output_tokens"
    assert events[-1].type == "response.incomplete"
    assert final.output[-1].type == "function_call" and final.output[-1].status == "incomplete"


def test_tool_without_arguments_gets_empty_object(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(_fixture("vercel-ai/anthropic-tool-no-args.chunks.txt"))
    final, _ = stream(client, model=MODEL, input="update", tools=[{"type": "function", "name": "updateIssueList"}])
    assert final.output[-1].arguments == "{}"


# --- conversations ----------------------------------------------------------------------------------


def test_tool_loop_with_thinking_matches_recorded_second_request(client: openai.OpenAI,
                                                                  upstream: ReplayServer) -> None:
    first, second = _fixture("pydantic-ai/test_anthropic_tool_with_thinking.yaml")
    tools = [{"type": "function", "name": "get_user_country", "description": "",
              "parameters": {"additionalProperties": False, "properties": {}, "type": "object"}}]
    request = {"model": MODEL, "max_output_tokens": 4096, "tools": tools, "tool_choice": "auto",
               "reasoning": {"effort": "medium"}, "include": ["reasoning.encrypted_content"]}
    question = {"role": "user", "content": "What is the largest city in the user country?"}
    upstream.enqueue(first)
    turn1, _ = create(client, input=[question], **request)
    assert [item.type for item in turn1.output] == ["reasoning", "message", "function_call"]
    call = turn1.output[2]
    upstream.enqueue(second)
    history = [question, *[item.to_dict() for item in turn1.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "Mexico", "is_error": False}]
    turn2, _ = create(client, input=history, **request)
    assert sent(upstream)["messages"] == second.request_body["messages"]
    assert sent(upstream)["thinking"]["type"] == "enabled"
    assert "Mexico City" in turn2.output_text


def test_streamed_tool_loop_with_thinking_round_trips_signature(client: openai.OpenAI,
                                                                upstream: ReplayServer) -> None:
    turn1_ex = load(OWN / "tool-loop-thinking.1.sse", provider="anthropic")[0]
    turn2_ex = load(OWN / "tool-loop-thinking.2.sse", provider="anthropic")[0]
    tools = [{"type": "function", "name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    request = {"model": MODEL, "tools": tools, "reasoning": {"effort": "high"},
               "include": ["reasoning.encrypted_content"], "instructions": "Use the tools."}
    question = {"role": "user", "content": "Weather in Paris?"}
    upstream.enqueue(turn1_ex)
    turn1, _ = stream(client, input=[question], **request)
    assert [item.type for item in turn1.output] == ["reasoning", "message", "function_call"]
    call = turn1.output[2]
    assert json.loads(call.arguments) == {"city": "Paris"}
    upstream.enqueue(turn2_ex)
    history = [question, *[item.to_dict() for item in turn1.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "18C, sunny"}]
    turn2, _ = stream(client, input=history, **request)
    body = sent(upstream)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert body["system"] == [{"type": "text", "text": "Use the tools."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "The user wants the weather in Paris. I should call get_weather.",
             "signature": "c2x1aWNlLWZha2Utc2lnbmF0dXJlLXR1cm4tb25l"},
            {"type": "text", "text": "Let me check the weather."},
            {"type": "tool_use", "id": "toolu_01SluiceLoopCall0000001", "name": "get_weather",
             "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01SluiceLoopCall0000001", "content": "18C, sunny"}]},
    ]
    assert turn2.output_text == "It is 18°C and sunny in Paris."
    assert turn2.usage.input_tokens == 540 and turn2.usage.input_tokens_details.cached_tokens == 400


def test_tool_loop_without_encrypted_content_turns_thinking_off(client: openai.OpenAI,
                                                                upstream: ReplayServer) -> None:
    turn1_ex = load(OWN / "tool-loop-thinking.1.sse", provider="anthropic")[0]
    turn2_ex = load(OWN / "tool-loop-thinking.2.sse", provider="anthropic")[0]
    request = {"model": MODEL, "tools": [{"type": "function", "name": "get_weather"}],
               "reasoning": {"effort": "low", "summary": "auto"}}
    upstream.enqueue(turn1_ex)
    turn1, _ = stream(client, input="Weather in Paris?", **request)
    assert turn1.output[0].encrypted_content is None
    upstream.enqueue(turn2_ex)
    history = [{"role": "user", "content": "Weather in Paris?"}, *[item.to_dict() for item in turn1.output],
               {"type": "function_call_output", "call_id": turn1.output[2].call_id, "output": "18C"}]
    stream(client, input=history, **request)
    body = sent(upstream)
    # No signed thinking to send back: Anthropic would reject the tool loop with thinking on.
    assert "thinking" not in body
    assert [b["type"] for b in body["messages"][1]["content"]] == ["text", "tool_use"]


def test_parallel_tool_calls_round_trip(client: openai.OpenAI, upstream: ReplayServer) -> None:
    first, second = _fixture("pydantic-ai/test_multiple_parallel_tool_calls.yaml")
    request = to_responses(first.request_body)
    upstream.enqueue(first)
    turn1, _ = create(client, **request)
    calls = [item for item in turn1.output if item.type == "function_call"]
    assert [json.loads(c.arguments)["name"] for c in calls] == ["Alice", "Bob", "Charlie", "Daisy"]
    answers = ["alice is bob's wife", "bob is alice's husband", "charlie is alice's son",
               "daisy is bob's daughter and charlie's younger sister"]
    history = [*request["input"], *[item.to_dict() for item in turn1.output],
               *[{"type": "function_call_output", "call_id": c.call_id, "output": a, "is_error": False}
                 for c, a in zip(calls, answers, strict=True)]]
    upstream.enqueue(second)
    create(client, **{**request, "input": history})
    assert sent(upstream)["messages"] == second.request_body["messages"]


# --- request translation ------------------------------------------------------------------------------


def _text_response() -> Exchange:
    return _fixture("vercel-ai/anthropic-text.json")[0]


def test_request_mapping(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(_text_response())
    create(client, model=MODEL, instructions="Be brief.", temperature=1.6, top_p=0.5, max_output_tokens=500,
           parallel_tool_calls=False, tool_choice="required",
           tools=[{"type": "function", "name": "lookup", "description": "Look up",
                   "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}],
           input=[
               {"role": "system", "content": "System rule."},
               {"role": "assistant", "content": "Earlier answer."},
               {"role": "developer", "content": "Developer rule."},
               {"role": "user", "content": [
                   {"type": "input_text", "text": "Look:"},
                   {"type": "input_image", "image_url": "https://example.com/cat.png"},
                   {"type": "input_image", "image_url": "data:image/jpeg;base64,/9j/AAAA"},
                   {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"},
                   {"type": "input_file", "filename": "n.txt", "file_data": "data:text/plain;base64,aGVsbG8="},
                   {"type": "input_text", "text": ""},
               ]},
           ])
    body = sent(upstream)
    assert body["system"] == [{"type": "text", "text": t} for t in ("Be brief.", "System rule.", "Developer rule.")]
    assert body["messages"][0] == {"role": "user", "content": [{"type": "text", "text": "(continue)"}]}
    assert body["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "Earlier answer."}]}
    assert body["messages"][2]["content"] == [
        {"type": "text", "text": "Look:"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/AAAA"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
         "title": "a.pdf"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello"}, "title": "n.txt"},
    ]
    assert (body["max_tokens"], body["temperature"]) == (500, 1.0)  # clamped to Anthropic's 0..1
    assert "top_p" not in body  # newer models reject temperature with top_p
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["tools"] == [{"name": "lookup", "description": "Look up",
                              "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}),
    ("none", {"type": "none"}),
    ("required", {"type": "any"}),
    ({"type": "function", "name": "b"}, {"type": "tool", "name": "b"}),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]}, {"type": "any"}),
])
def test_tool_choice(client: openai.OpenAI, upstream: ReplayServer, choice: Any, expected: dict[str, Any]) -> None:
    upstream.enqueue(_text_response())
    tools = [{"type": "function", "name": n, "parameters": {"type": "object", "properties": {}}} for n in "ab"]
    create(client, model=MODEL, input="hi", tools=tools, tool_choice=choice)
    body = sent(upstream)
    assert body["tool_choice"] == expected
    if isinstance(choice, dict) and choice["type"] == "allowed_tools":
        assert [t["name"] for t in body["tools"]] == ["b"]


def test_thinking_budget_and_sampling(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(_text_response())
    create(client, model=MODEL, input="hi", reasoning={"effort": "high"}, temperature=0.2)
    body = sent(upstream)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert body["max_tokens"] == 32000 and "temperature" not in body
    # An explicit cap includes reasoning: the budget shrinks under it.
    upstream.enqueue(_text_response())
    create(client, model=MODEL, input="hi", reasoning={"effort": "high"}, max_output_tokens=3000)
    body = sent(upstream)
    assert body["thinking"]["budget_tokens"] < body["max_tokens"] == 3000
    # Too small a cap for any thinking: thinking is left off.
    upstream.enqueue(_text_response())
    create(client, model=MODEL, input="hi", reasoning={"effort": "low"}, max_output_tokens=800)
    assert "thinking" not in sent(upstream)
    # Forced tool use cannot be combined with thinking.
    upstream.enqueue(_text_response())
    create(client, model=MODEL, input="hi", reasoning={"effort": "low"}, tool_choice="required",
           tools=[{"type": "function", "name": "f"}])
    assert "thinking" not in sent(upstream)
    upstream.enqueue(_text_response())
    create(client, model=MODEL, input="hi", reasoning={"effort": "none"})
    assert "thinking" not in sent(upstream)


def test_adaptive_thinking_option(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(_text_response())
    create(client, model="claude-adaptive", input="hi", reasoning={"effort": "xhigh"})
    body = sent(upstream)
    assert body["thinking"] == {"type": "adaptive"}
    assert body["output_config"] == {"effort": "xhigh"}


def test_cache_control_breakpoints(client: openai.OpenAI, upstream: ReplayServer) -> None:
    eph = {"type": "ephemeral"}
    hour = {"type": "ephemeral", "ttl": "1h"}
    upstream.enqueue(_text_response())
    create(client, model=MODEL, instructions="sys",
           tools=[{"type": "function", "name": "f", "cache_control": hour}],
           input=[
               {"role": "system", "content": "more system", "cache_control": eph},
               {"role": "user", "content": "one", "cache_control": eph},
               {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}", "cache_control": eph},
               {"type": "function_call_output", "call_id": "call_1", "output": "r", "cache_control": hour},
               {"role": "user", "content": "two", "cache_control": eph},
           ])
    body = sent(upstream)
    marks = [("tool", t["cache_control"]) for t in body["tools"] if "cache_control" in t]
    marks += [("system", b["cache_control"]) for b in body["system"] if "cache_control" in b]
    for message in body["messages"]:
        marks += [(b["type"], b["cache_control"]) for b in message["content"] if "cache_control" in b]
    # Six asked for, four kept: the first (stable prefix) and the three latest. A 1h breakpoint
    # upgrades the 5m ones before it.
    assert marks == [("tool", hour), ("tool_use", hour), ("tool_result", hour), ("text", eph)]
    # Request-level cache_control uses one slot: Anthropic's automatic breakpoint.
    upstream.enqueue(_text_response())
    create(client, model=MODEL, input=[{"role": "user", "content": "x", "cache_control": eph}],
           extra_body={"cache_control": {"type": "ephemeral", "ttl": "1h"}})
    body = sent(upstream)
    assert body["cache_control"] == hour
    assert body["messages"][0]["content"][0]["cache_control"] == hour


def test_structured_output_native(client: openai.OpenAI, upstream: ReplayServer) -> None:
    class Dog(pydantic.BaseModel):
        name: str
        age: int
        bio: str

    ex = _fixture("simonw-llm-anthropic/test_schema_prompt.yaml")[0]
    upstream.enqueue(json_exchange(accumulate(ex)))
    parsed = client.responses.parse(model=MODEL, input="Invent a good dog", text_format=Dog)
    assert parsed.output_parsed == Dog(name="Biscuit", age=4, bio=parsed.output_parsed.bio)
    fmt = sent(upstream)["output_config"]["format"]
    assert fmt["type"] == "json_schema"
    assert fmt["schema"]["additionalProperties"] is False
    assert set(fmt["schema"]["required"]) == {"name", "age", "bio"}


def test_structured_output_by_forced_tool(client: openai.OpenAI, upstream: ReplayServer) -> None:
    class Weather(pydantic.BaseModel):
        elements: list[dict[str, Any]]

    body = json.loads(_fixture("vercel-ai/anthropic-json-tool.1.json")[0].body)
    body["content"][0]["name"] = "Weather"
    upstream.enqueue(json_exchange(body))
    parsed = client.responses.parse(model="claude-json-tool", input="Weather in 4 cities", text_format=Weather)
    assert parsed.output[0].type == "message"
    assert parsed.output_parsed.elements[0]["location"] == "San Francisco"
    sent_body = sent(upstream)
    assert sent_body["tool_choice"] == {"type": "tool", "name": "Weather"}
    assert sent_body["tools"][0]["name"] == "Weather" and "output_config" not in sent_body
    # Streamed: the tool's input arrives as text deltas.
    stream_ex = _fixture("vercel-ai/anthropic-tool-no-args.chunks.txt")[0]
    stream_ex = Exchange(stream_ex.method, stream_ex.path, None, 200, stream_ex.headers,
                         stream_ex.body.replace(b"updateIssueList", b"Weather"), True)
    upstream.enqueue(stream_ex)
    final, _ = stream(client, model="claude-json-tool", input="x", text={"format": {
        "type": "json_schema", "name": "Weather", "schema": Weather.model_json_schema()}})
    assert final.output[0].type == "message" and final.output_text.endswith("{}")


# --- errors and capabilities -------------------------------------------------------------------------


def test_upstream_errors(client: openai.OpenAI, upstream: ReplayServer) -> None:
    overloaded, rate_limited, in_body = load(OWN / "errors.json", provider="anthropic")
    upstream.enqueue(overloaded)
    with pytest.raises(openai.APIStatusError) as info:
        create(client, model=MODEL, input="Hello")
    # The adapter raises a retryable 503 (see test_error_mapping); with no other route left the
    # gateway answers 424 "every route failed", keeping the code.
    assert info.value.status_code == 424
    assert info.value.body["code"] == "overloaded"
    assert "sk-ant-test" not in info.value.message
    upstream.enqueue(rate_limited)
    with pytest.raises(openai.RateLimitError) as rate:
        create(client, model=MODEL, input="Hello")
    assert rate.value.response.headers["retry-after"] == "7"
    assert rate.value.body["code"] == "rate_limit_exceeded"
    upstream.enqueue(in_body)
    with pytest.raises(openai.APIStatusError) as info:
        create(client, model=MODEL, input="Hello")
    assert (info.value.status_code, info.value.body["code"]) == (424, "overloaded")


@pytest.mark.parametrize(("status", "body", "expected"), [
    (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
     (503, "server_error", "overloaded", True)),
    (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
     (429, "rate_limit_error", "rate_limit_exceeded", True)),
    (400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
     (400, "invalid_request_error", None, False)),
    (401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
     (401, "authentication_error", None, False)),
    (500, {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
     (500, "server_error", "server_error", True)),
    (529, "<html>overloaded</html>", (503, "server_error", "overloaded", True)),
])
def test_error_mapping(status: int, body: Any, expected: tuple[Any, ...]) -> None:
    from sluice.config import ProviderConfig
    from sluice.providers.anthropic import AnthropicAdapter

    adapter = AnthropicAdapter("claude", ProviderConfig(type="anthropic", api_key="sk-ant-test"), None)  # type: ignore[arg-type]
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    exc = adapter.error_from_body(status, raw, "3")
    assert (exc.status, exc.type, exc.code, exc.retryable) == expected
    assert exc.headers == ({"retry-after": "3"} if status == 429 else {})


def test_bad_request_passes_through(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(_fixture("pydantic-ai/test_anthropic_explicit_effort_xhigh_unsupported_model_errors.yaml"))
    with pytest.raises(openai.BadRequestError) as info:
        create(client, model=MODEL, input="What is 2+2?")
    assert "does not support effort level 'xhigh'" in info.value.message
    assert info.value.body["type"] == "invalid_request_error"


def test_overloaded_mid_stream(gw: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue(load(OWN / "stream-overloaded-midstream.sse", provider="anthropic"))
    events = []
    with httpx.stream("POST", f"{gw.url}/v1/responses", json={"model": MODEL, "input": "hi", "stream": True},
                      headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=20) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    kinds = [e["type"] for e in events]
    assert "response.output_text.delta" in kinds
    assert kinds[-2:] == ["error", "response.failed"]
    assert events[-2]["code"] == "overloaded"
    # response.failed is the pipeline's (pipeline/stream.py); everything the adapter produced must validate.
    for event in events[:-1]:
        _EVENT.validate_python(sdk_compatible(event))


def test_overloaded_at_stream_start_is_an_upstream_error(client: openai.OpenAI, upstream: ReplayServer) -> None:
    # Nothing was produced yet: the adapter raises before the stream starts, so routing may fail
    # over; with a single route the client gets the error as a plain HTTP answer.
    upstream.enqueue(load(OWN / "stream-overloaded-at-start.sse", provider="anthropic"))
    with pytest.raises(openai.APIStatusError) as info:
        stream(client, model=MODEL, input="hi")
    assert (info.value.status_code, info.value.body["code"]) == (424, "overloaded")


@pytest.mark.parametrize(("req", "param"), [
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"include": ["message.output_text.logprobs"]}, "include"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
     "input[0].content[0].file_id"),
])
def test_unsupported(client: openai.OpenAI, upstream: ReplayServer, req: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        # An ad-hoc provider/model route: no catalog capabilities, so the adapter's check() decides.
        create(client, **{"model": "claude/claude-unlisted", "input": "hi", **req})
    assert info.value.param == param
    assert info.value.code == "unsupported_parameter"
    assert upstream.requests == []


def test_foreign_reasoning_is_dropped(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(_text_response())
    create(client, model=MODEL, input=[
        {"role": "user", "content": "hi"},
        {"type": "reasoning", "summary": [], "encrypted_content": "gAAAAopenai-opaque"},
        {"type": "reasoning", "summary": [], "encrypted_content": seal("gemini", {"sig": "x"})},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ])
    assert [m["content"][0]["type"] for m in sent(upstream)["messages"]] == ["text", "text", "text"]


def test_history_items(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(_text_response())
    create(client, model=MODEL, text={"format": {"type": "json_object"}}, input=[
        {"role": "user", "content": "Draw and search"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "q"}},
        {"type": "function_call", "call_id": "call:1/a", "name": "draw", "arguments": ""},
        {"type": "function_call_output", "call_id": "call:1/a", "is_error": True, "output": [
            {"type": "input_text", "text": "failed, see"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]},
    ])
    body = sent(upstream)
    assert body["system"][-1]["text"].startswith("Respond with a single valid JSON object")
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_1_a", "name": "draw", "input": {}}]}
    assert body["messages"][2] == {"role": "user", "content": [{
        "type": "tool_result", "tool_use_id": "call_1_a", "is_error": True, "content": [
            {"type": "text", "text": "failed, see"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]}
    with pytest.raises(openai.BadRequestError) as info:
        create(client, model=MODEL, input=[{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}])
    assert info.value.param == "input[0].arguments"
