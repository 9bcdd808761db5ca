"""Replay every Chat Completions recording (OpenAI, compatible servers, Mistral) through the gateway.

`type: openai-chat` translates: a Responses request becomes a chat request and the chat answer
(JSON or chunk stream) becomes a Response / the Responses event sequence. Each recording is
replayed through the official SDK and a raw HTTP client; the client must see what the recorded
model said (text = the recorded deltas, tool calls, reasoning, refusals, logprobs, finish reason,
usage) priced at the route's rates. Streams and their folded JSON equivalents must give the same
Response. What Sluice sent upstream is compared with the recorded request (the history of a
recorded second turn must translate into the recorded second-turn messages) and validated
against `CreateChatCompletionRequest` in the official OpenAPI spec.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from sluice.providers.openai_chat import ChunkTranslator, from_completion
from tests.conftest import MASTER_KEY, running_gateway
from tests.openai_replay_helpers import (
    ROOT,
    check_stream,
    client_error,
    event_errors,
    exchange_params,
    exchanges,
    expected_cost,
    final_parts,
    fold_deltas,
    json_exchange,
    raw_stream,
    response_errors,
    sdk_create,
    sdk_dump,
    sdk_stream,
    strip_volatile,
)
from tests.replay import Exchange

LABEL = "replay-chat/gpt-4o-2024-08-06"
UPSTREAM_MODEL = "gpt-4o-2024-08-06"
PRICE = (2.5, 1.25, 10.0)
CHAT_PATH = "/v1/chat/completions"
_FINISH = {"length": "max_output_tokens", "content_filter": "content_filter"}

PARAMS = exchange_params("openai-chat", "mistral")
LOGPROBS = Path("openai-chat/openai-python/test_content_logprobs_events.83b060bae42e.sse")


def _ex(param: Any) -> Exchange:
    return exchanges(param.values[0])[param.values[1]]


# --- folding a recorded chat stream into its non-streaming equivalent --------------------------


def fold_chat_stream(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The `chat.completion` a server would have answered instead of these chunks.

    Per choice: content (a string, or Mistral's content-chunk array when the stream used one),
    reasoning_content, refusal, tool_calls (fragments joined per `index`; index-less whole calls,
    as Mistral sends them, each their own), logprobs, finish_reason; the last usage seen.
    """
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    head = next((c for c in chunks if c.get("id")), chunks[0])
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or ():
            state = choices.setdefault(choice.get("index", 0), {
                "pieces": [], "reasoning": "", "refusal": None, "calls": {}, "logprobs": None, "finish": None,
                "array": False})
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, list):
                state["array"] = True
                for part in content:
                    if part.get("type") == "thinking":
                        _append(state["pieces"], "thinking", "".join(p.get("text", "") for p in part["thinking"]))
                    elif part.get("type") == "text":
                        _append(state["pieces"], "text", part["text"])
            elif content:
                _append(state["pieces"], "text", content)
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str):
                state["reasoning"] += reasoning
            if delta.get("refusal"):
                state["refusal"] = (state["refusal"] or "") + delta["refusal"]
            for position, call in enumerate(delta.get("tool_calls") or ()):
                key = call["index"] if "index" in call else ("whole", len(state["calls"]) + position)
                known = state["calls"].setdefault(key, {"id": call.get("id"), "type": "function",
                                                        "function": {"name": "", "arguments": ""}})
                function = call.get("function") or {}
                known["id"] = known["id"] or call.get("id")
                known["function"]["name"] = known["function"]["name"] or function.get("name") or ""
                known["function"]["arguments"] += function.get("arguments") or ""
            if (choice.get("logprobs") or {}).get("content"):
                state["logprobs"] = state["logprobs"] or {"content": [], "refusal": None}
                state["logprobs"]["content"] += choice["logprobs"]["content"]
            state["finish"] = choice.get("finish_reason") or state["finish"]
    out_choices = []
    for index in sorted(choices):
        state = choices[index]
        if state["array"]:
            content: Any = [{"type": "thinking", "thinking": [{"type": "text", "text": text}]} if kind == "thinking"
                            else {"type": "text", "text": text} for kind, text in state["pieces"]]
        else:
            content = "".join(text for _, text in state["pieces"]) or None
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": state["refusal"]}
        if state["reasoning"]:
            message["reasoning_content"] = state["reasoning"]
        if state["calls"]:
            message["tool_calls"] = list(state["calls"].values())
        out_choices.append({"index": index, "message": message, "logprobs": state["logprobs"],
                            "finish_reason": state["finish"]})
    return {"id": head.get("id"), "object": "chat.completion", "created": head.get("created"),
            "model": head.get("model"), "choices": out_choices, "usage": usage}


def _append(pieces: list[list[str]], kind: str, text: str) -> None:
    if not text:
        return
    if pieces and pieces[-1][0] == kind:
        pieces[-1][1] += text
    else:
        pieces.append([kind, text])


def completion_of(ex: Exchange) -> dict[str, Any]:
    return fold_chat_stream(list(ex.events())) if ex.stream else ex.json()


def expected(completion: dict[str, Any]) -> dict[str, Any]:
    """What the client must get, read off the (folded) recorded completion's first choice."""
    choice = next(c for c in completion["choices"] if c.get("index", 0) == 0)
    message = choice["message"]
    content, reasoning = message.get("content"), message.get("reasoning_content") or message.get("reasoning")
    if isinstance(content, list):
        reasoning = "".join(p["thinking"][0]["text"] for p in content if p["type"] == "thinking")
        content = "".join(p["text"] for p in content if p["type"] == "text")
    usage = completion.get("usage") or {}
    prompt_details = usage.get("prompt_tokens_details") or {}
    return {
        "text": content or "",
        "reasoning": reasoning or "",
        "refusal": message.get("refusal") or "",
        "calls": [(c["id"], c["function"]["name"], c["function"]["arguments"])
                  for c in message.get("tool_calls") or ()],
        "logprobs": (choice.get("logprobs") or {}).get("content") or [],
        "finish": choice.get("finish_reason"),
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
            "input_tokens_details": {"cached_tokens": prompt_details.get("cached_tokens")
                                     or usage.get("prompt_cache_hit_tokens") or 0, "cached_tokens_created": 0,
                                     "cache_write_tokens": 0, "cache_write_1h_tokens": 0},
            "output_tokens_details": {"reasoning_tokens":
                                      (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)},
        },
    }


def check_response(response: dict[str, Any], completion: dict[str, Any]) -> None:
    """A final Response (wire JSON) against the recorded completion."""
    want = expected(completion)
    output = response["output"]
    assert response["model"] == LABEL
    kinds = [item["type"] for item in output]
    order = ["reasoning"] * bool(want["reasoning"]) + ["message"] * bool(want["text"] or want["refusal"]) \
        + ["function_call"] * len(want["calls"])
    assert kinds == order
    reasoning = [item for item in output if item["type"] == "reasoning"]
    if want["reasoning"]:
        assert reasoning[0]["summary"] == []
        assert reasoning[0]["content"] == [{"type": "reasoning_text", "text": want["reasoning"]}]
    parts = [p for item in output if item["type"] == "message" for p in item["content"]]
    assert "".join(p["text"] for p in parts if p["type"] == "output_text") == want["text"]
    assert "".join(p["refusal"] for p in parts if p["type"] == "refusal") == want["refusal"]
    calls = [(i["call_id"], i["name"], i["arguments"]) for i in output if i["type"] == "function_call"]
    assert calls == want["calls"]
    logprobs = [lp for p in parts if p["type"] == "output_text" for lp in p["logprobs"]]
    assert [(lp["token"], lp["logprob"], lp["bytes"], lp["top_logprobs"]) for lp in logprobs] == \
        [(lp["token"], lp["logprob"], lp.get("bytes") or list(lp["token"].encode()), lp["top_logprobs"])
         for lp in want["logprobs"]]
    reason = _FINISH.get(want["finish"] or "")
    assert response["status"] == ("incomplete" if reason else "completed")
    assert response["incomplete_details"] == ({"reason": reason} if reason else None)
    assert all(item["status"] == response["status"] for item in output if "status" in item)
    assert response["usage"] == want["usage"]
    assert response["cost"]["total"] == pytest.approx(expected_cost(want["usage"], *PRICE), abs=1e-12)
    assert response_errors(response) == set()


# --- the client's request, from the recorded chat request --------------------------------------


def responses_request(rel: Path, index: int) -> dict[str, Any]:
    """A Responses request asking what the recorded chat request asked: same history (system ->
    instructions, assistant tool_calls -> function_call items, tool -> function_call_output),
    tools, tool_choice, response_format -> text.format, max tokens, sampling, logprobs."""
    chat = exchanges(rel)[index].request_body
    if chat is None:
        body: dict[str, Any] = {"model": "chat", "input": "Hello"}
        if rel == LOGPROBS:
            body.update(include=["message.output_text.logprobs"], top_logprobs=2)
        return body
    body = {"model": "chat"}
    instructions, items = [], []
    for message in chat["messages"]:
        role, text = message["role"], _text(message.get("content"))
        if role in ("system", "developer") and not items:
            instructions.append(text)
        elif role == "tool":
            items.append({"type": "function_call_output", "call_id": message["tool_call_id"], "output": text})
        elif role == "assistant":
            if text:
                items.append({"role": "assistant", "content": text})
            items += [{"type": "function_call", "call_id": c["id"], "name": c["function"]["name"],
                       "arguments": c["function"]["arguments"]} for c in message.get("tool_calls") or ()]
        else:
            items.append({"role": role, "content": text})
    body["input"] = items
    if instructions:
        body["instructions"] = "\n\n".join(instructions)
    if chat.get("tools"):
        body["tools"] = [{"type": "function", **{k: v for k, v in t["function"].items() if v is not None}}
                         for t in chat["tools"]]
    choice = chat.get("tool_choice")
    if choice is not None:
        body["tool_choice"] = choice if isinstance(choice, str) else {"type": "function",
                                                                      "name": choice["function"]["name"]}
    fmt = chat.get("response_format")
    if fmt and fmt["type"] == "json_schema":
        body["text"] = {"format": {"type": "json_schema", **fmt["json_schema"]}}
    elif fmt:
        body["text"] = {"format": {"type": fmt["type"]}}
    limit = chat.get("max_completion_tokens") or chat.get("max_tokens")
    if limit:
        body["max_output_tokens"] = limit
    for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty", "user", "prompt_cache_key",
                 "parallel_tool_calls"):
        if chat.get(name) is not None:
            body[name] = chat[name]
    if chat.get("logprobs"):
        body["include"] = ["message.output_text.logprobs"]
        if chat.get("top_logprobs"):
            body["top_logprobs"] = chat["top_logprobs"]
    if chat.get("reasoning_effort"):
        body["reasoning"] = {"effort": chat["reasoning_effort"]}
    return body


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if p.get("type") == "text")
    return content or ""


# Chat parameters a Responses request cannot express (n, stop, moderation) or that Sluice only
# forwards on providers configured for them (prompt_cache_key); `model`, `stream` and
# `stream_options` are checked apart (`check_sent`).
_NOT_COMPARED = frozenset({"model", "n", "stop", "moderation", "prompt_cache_key", "stream", "stream_options"})


def comparable(chat: dict[str, Any]) -> dict[str, Any]:
    """A chat request reduced to what it asks, so that equivalent spellings compare equal."""
    out = {k: v for k, v in chat.items() if v is not None and k not in _NOT_COMPARED}
    if "max_tokens" in out:
        out["max_completion_tokens"] = out.pop("max_tokens")
    out["messages"] = _comparable_messages(chat["messages"])
    if "tools" in out:
        out["tools"] = [{"type": "function", "function": {k: v for k, v in t["function"].items()
                                                          if v not in (None, "")}} for t in out["tools"]]
    return out


def _comparable_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        item: dict[str, Any] = {"role": role}
        text = _text(message.get("content")) if isinstance(message.get("content"), list) else message.get("content")
        if text:
            item["content"] = text
        if role == "tool":
            item["tool_call_id"] = message["tool_call_id"]
        calls = [{"id": c["id"], "name": c["function"]["name"], "arguments": _json(c["function"]["arguments"])}
                 for c in message.get("tool_calls") or ()]
        if role == "assistant" and out and out[-1]["role"] == "assistant" and "tool_calls" not in out[-1]:
            # Consecutive assistant pieces are one turn (Sluice merges them; some clients don't).
            merged = out[-1]
            if text:
                merged["content"] = merged.get("content", "") + text
            if calls:
                merged["tool_calls"] = calls
            continue
        if calls:
            item["tool_calls"] = calls
        out.append(item)
    return out


def _json(arguments: str) -> Any:
    # Clients may re-serialize the arguments they got (simonw's llm adds spaces): same JSON, same call.
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


# --- the official spec: CreateChatCompletionRequest --------------------------------------------


@cache
def _schemas() -> dict[str, Any]:
    path = ROOT / "specs" / "openai" / "openapi.yaml"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open() as handle:
        return yaml.load(handle, Loader=loader)["components"]["schemas"]


def spec_errors(value: Any, schema: dict[str, Any], path: str = "$", strict: bool = True) -> list[str]:
    """Validate `value` against an OpenAPI schema (the keywords the chat request schemas use).

    `strict` also rejects properties the schema does not declare (where it leaves
    additionalProperties unset), so a misspelled or invented field is caught.
    """
    if "$ref" in schema:
        target = _schemas()[schema["$ref"].rsplit("/", 1)[-1]]
        return [] if value is None and schema.get("nullable") else spec_errors(value, target, path, strict)
    if value is None and schema.get("nullable"):
        return []
    errors: list[str] = []
    for sub in schema.get("allOf", ()):
        errors += spec_errors(value, sub, path, strict=False)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            matches = [s for s in schema[key] if not spec_errors(value, s, path, strict)]
            if not matches or (key == "oneOf" and len(matches) > 1):
                errors.append(f"{path}: {len(matches)} of the {key} alternatives match {json.dumps(value)[:200]}")
    types = schema.get("type")
    if types is not None:
        allowed = types if isinstance(types, list) else [types]
        if not any(_is_type(value, t) for t in allowed):
            return [*errors, f"{path}: expected {types}, got {json.dumps(value)[:100]}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, bool):
        return errors
    if isinstance(value, (int, float)):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, str) and "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += spec_errors(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        errors += [f"{path}: missing {name}" for name in schema.get("required", ()) if name not in value]
        properties = schema.get("properties", {})
        for name, sub in properties.items():
            if name in value:
                errors += spec_errors(value[name], sub, f"{path}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            errors += [e for name in value if name not in properties
                       for e in spec_errors(value[name], extra, f"{path}.{name}")]
        elif strict and extra is None and (properties or "allOf" in schema):
            known = _declared(schema)
            if known is not None:
                errors += [f"{path}: unknown property {name!r}" for name in value if name not in known]
    return errors


def _declared(schema: dict[str, Any]) -> set[str] | None:
    """Every property an object schema declares, through allOf; None if it allows any."""
    if "$ref" in schema:
        return _declared(_schemas()[schema["$ref"].rsplit("/", 1)[-1]])
    if schema.get("additionalProperties") not in (None, False):
        return None
    names = set(schema.get("properties", {}))
    for sub in schema.get("allOf", ()):
        more = _declared(sub)
        if more is None:
            return None
        names |= more
    return names


def _is_type(value: Any, kind: str) -> bool:
    return {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]


def check_chat_request(sent: dict[str, Any]) -> None:
    errors = spec_errors(sent, {"$ref": "#/components/schemas/CreateChatCompletionRequest"})
    assert errors == [], errors


def check_sent(upstream: Any, rel: Path, index: int, stream: bool) -> dict[str, Any]:
    """What Sluice sent: the spec's shape, the route's model, and the recorded request's meaning."""
    request = upstream.requests[-1]
    sent = request.json
    assert request.path == CHAT_PATH
    assert request.headers["authorization"] == "Bearer sk-upstream-secret-chat-0000"
    check_chat_request(sent)
    assert sent["model"] == UPSTREAM_MODEL
    if stream:
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    else:
        assert "stream" not in sent and "stream_options" not in sent
    recorded = exchanges(rel)[index].request_body
    if recorded is not None:
        assert comparable(sent) == comparable(recorded)
    return sent


# --- every exchange ----------------------------------------------------------------------------


@pytest.mark.parametrize(("rel", "index"), PARAMS)
def test_replay_sdk(gateway: Any, upstream: Any, client: openai.OpenAI, rel: Path, index: int) -> None:
    """The official SDK gets the recorded answer (or error) through the gateway."""
    ex = exchanges(rel)[index]
    body = responses_request(rel, index)
    if ex.status >= 400:
        err = ex.json()["error"]
        # The gateway's status, not always the upstream's (a provider's 401 is a 424, see client_error).
        want_status, calls = client_error(ex.status, err.get("code"))
        want_param = err.get("param") if want_status in (400, 413, 422) else None
        upstream.enqueue([ex] * calls)
        with pytest.raises(openai.APIStatusError) as info:
            (sdk_stream if ex.stream else sdk_create)(client, body)
        assert info.value.status_code == want_status
        assert err["message"] in info.value.message
        assert (info.value.body["code"], info.value.body["param"]) == (err.get("code"), want_param)
        assert len(upstream.requests) == calls
        check_sent(upstream, rel, index, ex.stream)
        # A streaming request refused upstream is refused before any SSE: a plain HTTP error.
        upstream.enqueue([ex] * calls)
        status, (payload,), _ = raw_stream(gateway.url, body)
        assert status == want_status and payload["error"]["code"] == err.get("code")
        assert err["message"] in payload["error"]["message"]
        check_sent(upstream, rel, index, True)
        return
    upstream.enqueue(ex)
    completion = completion_of(ex)
    want = expected(completion)
    if ex.stream:
        events, final = sdk_stream(client, body)
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == want["text"]
        assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == want["reasoning"]
        assert "".join(e.delta for e in events if e.type == "response.refusal.delta") == want["refusal"]
        assert events[-1].type == ("response.incomplete" if want["finish"] in _FINISH else "response.completed")
        assert final.status == ("incomplete" if want["finish"] in _FINISH else "completed")
    else:
        final, wire = sdk_create(client, body)
        check_response(wire, completion)
    check_sent(upstream, rel, index, ex.stream)
    assert final.model == LABEL
    assert final.output_text == want["text"]
    assert [(c.call_id, c.name, c.arguments) for c in final.output if c.type == "function_call"] == want["calls"]
    assert final.usage.input_tokens == want["usage"]["input_tokens"]
    assert final.usage.output_tokens_details.reasoning_tokens == want["usage"]["output_tokens_details"][
        "reasoning_tokens"]


STREAMS = [p for p in PARAMS if _ex(p).stream and _ex(p).status == 200]


@pytest.mark.parametrize(("rel", "index"), STREAMS)
def test_replay_raw_stream(gateway: Any, upstream: Any, rel: Path, index: int) -> None:
    """The raw SSE Sluice builds from chunks: well formed, every event an SDK type, deltas = final."""
    ex = exchanges(rel)[index]
    upstream.enqueue(ex)
    status, events, _ = raw_stream(gateway.url, responses_request(rel, index))
    assert status == 200
    check_stream(events)
    for event in events:
        assert event_errors(event) == set(), event
    final = events[-1]["response"]
    check_response(final, completion_of(ex))
    parts = final_parts(final["output"])
    deltas = fold_deltas(events)
    assert deltas == {k: v for k, v in parts.items() if v}
    check_sent(upstream, rel, index, True)


@pytest.mark.parametrize(("rel", "index"), STREAMS)
def test_stream_and_non_stream_agree(gateway: Any, upstream: Any, client: openai.OpenAI, rel: Path,
                                     index: int) -> None:
    """The recorded stream, and the same answer folded into a chat.completion JSON, give the
    same Response (ids and timestamps aside)."""
    ex = exchanges(rel)[index]
    body = responses_request(rel, index)
    upstream.enqueue(ex)
    _, streamed = sdk_stream(client, body)
    upstream.enqueue(json_exchange(fold_chat_stream(list(ex.events())), CHAT_PATH))
    created, wire = sdk_create(client, body)
    check_response(wire, completion_of(ex))
    assert strip_volatile(sdk_dump(streamed)) == strip_volatile(sdk_dump(created))


def test_fold_matches_recorded_json_pairs() -> None:
    """Where a source recorded the same scenario both ways, the folded stream has the JSON's shape."""
    for name in ("mistral/vercel-ai/mistral-reasoning", "mistral/vercel-ai/mistral-tool-call"):
        (stream,) = exchanges(Path(f"{name}.chunks.txt"))
        (body,) = exchanges(Path(f"{name}.json"))
        folded, recorded = fold_chat_stream(list(stream.events())), body.json()
        assert expected(folded) == expected(recorded)


# --- what Sluice sends -------------------------------------------------------------------------

SECOND_TURNS = [p for p in PARAMS if p.values[1] > 0 and _ex(p).request_body is not None]


def test_second_turns_are_covered() -> None:
    # The 2-turn cassettes whose recorded history the translation must reproduce.
    names = {p.values[0].name for p in SECOND_TURNS}
    assert names == {"test_openai_native_output.yaml", "test_openai_tool_output.yaml",
                     "test_run_stream_sync_streams_real_model.yaml", "test_tool_use_basic.yaml",
                     "test_tools_streaming_variant_a.yaml", "test_mistral_history_uses_prompt_cache.yaml"}


@pytest.mark.parametrize(("rel", "index"), SECOND_TURNS)
def test_second_turn_history_translates_like_the_recording(gateway: Any, upstream: Any, client: openai.OpenAI,
                                                           rel: Path, index: int) -> None:
    """Turn 2 built the way a Responses client builds it, from turn 1's *Response* (not from the
    recorded request): its output items plus function_call_output items. Sluice must turn that
    history into the messages the recorded turn-2 request carried."""
    first, second = exchanges(rel)[index - 1], exchanges(rel)[index]
    body = responses_request(rel, index - 1)
    upstream.enqueue(first)
    turn1 = (sdk_stream(client, body)[1] if first.stream else sdk_create(client, body)[0])
    recorded_messages = second.request_body["messages"]
    tool_results = {m["tool_call_id"]: _text(m["content"]) for m in recorded_messages if m["role"] == "tool"}
    history = list(responses_request(rel, index - 1)["input"])
    for item in turn1.output:
        history.append(item.model_dump(exclude_none=True, include={"type", "role", "content", "call_id", "name",
                                                                  "arguments"}))
        if item.type == "function_call":
            history.append({"type": "function_call_output", "call_id": item.call_id,
                            "output": tool_results[item.call_id]})
    # What the user said after the model's answer, if anything (e.g. a follow-up question).
    tail = responses_request(rel, index)["input"][len(history):]
    upstream.enqueue(second)
    turn2 = {**responses_request(rel, index), "input": history + tail}
    (sdk_stream if second.stream else sdk_create)(client, turn2)
    sent = check_sent(upstream, rel, index, second.stream)
    assert _comparable_messages(sent["messages"]) == _comparable_messages(recorded_messages)


def test_request_translation(gateway: Any, upstream: Any, client: openai.OpenAI) -> None:
    """Every mapped field, in one request, against the spec and field by field."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    tool = {"type": "function", "name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": True}
    body = {
        "model": "chat",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris"},
                                         {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
            {"role": "assistant", "content": "Checking."},
            {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": '{"city":"Lyon"}'},
            {"type": "function_call_output", "call_id": "call_a", "output": "12C"},
            {"type": "function_call_output", "call_id": "call_b",
             "output": [{"type": "input_text", "text": "14C"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        ],
        "tools": [tool],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": True,
        "text": {"format": {"type": "json_schema", "name": "weather", "schema": schema, "strict": True}},
        "max_output_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "include": ["message.output_text.logprobs"],
        "top_logprobs": 3,
        "reasoning": {"effort": "low"},
        "metadata": {"k": "v"},
        "store": False,
    }
    upstream.enqueue(exchanges(LOGPROBS)[0])
    events, final = sdk_stream(client, body)
    sent = upstream.requests[-1].json
    check_chat_request(sent)
    assert sent == {
        "model": UPSTREAM_MODEL,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Use metric units."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris"},
                                         {"type": "image_url", "image_url": {"url": "https://x/y.png",
                                                                             "detail": "low"}}]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "12C"},
            {"role": "tool", "tool_call_id": "call_b", "content": "14C"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                    "parameters": tool["parameters"], "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema,
                                                                   "strict": True}},
        "max_completion_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "logprobs": True,
        "top_logprobs": 3,
        "reasoning_effort": "low",
    }
    # The recorded logprobs reach the client, on the deltas and on the final text part.
    want = [(lp["token"], lp["logprob"]) for lp in expected(completion_of(exchanges(LOGPROBS)[0]))["logprobs"]]
    assert [(lp.token, lp.logprob) for e in events if e.type == "response.output_text.delta" for lp in e.logprobs] \
        == want
    assert [(lp.token, lp.logprob) for lp in final.output[0].content[0].logprobs] == want


def test_spec_validator_catches_mistakes() -> None:
    """The hand-rolled validator is only worth something if it rejects bad requests."""
    good = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    check_chat_request(good)
    bad = [
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "robot", "content": "hi"}]},
        {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "sometimes"},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_output_tokens": 5},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}],
         "tools": [{"type": "function", "name": "flat"}]},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 21},
    ]
    for body in bad:
        assert spec_errors(body, {"$ref": "#/components/schemas/CreateChatCompletionRequest"}), body


# --- edge cases the recordings imply -----------------------------------------------------------

MISTRAL_TOOL = Path("mistral/vercel-ai/mistral-tool-call.chunks.txt")
MAX_TOKENS = Path("openai-chat/openai-python/test_parse_max_tokens_reached.4cc50a6135d2.sse")
TEXT = Path("openai-chat/vercel-ai/openai-text.chunks.txt")


def _chunks_exchange(chunks: list[dict[str, Any]], done: bool = True) -> Exchange:
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + ("data: [DONE]\n\n" if done else "")
    return Exchange(method="POST", path=CHAT_PATH, request_body=None, status=200,
                    headers={"content-type": "text/event-stream"}, body=body.encode(), stream=True,
                    source="synthetic")


def _variants(path: Path) -> Iterator[dict[str, Any]]:
    yield from exchanges(path)[0].events()


def test_mistral_parallel_whole_tool_calls(gateway: Any, upstream: Any, client: openai.OpenAI) -> None:
    """Mistral sends each tool call whole and without `index`; two in one chunk stay two calls.
    (Built from mistral-tool-call.chunks.txt by adding a second call to its tool chunk.)"""
    chunks = copy.deepcopy(list(_variants(MISTRAL_TOOL)))
    first = chunks[1]["choices"][0]["delta"]["tool_calls"][0]
    second = {"id": "hR2kqT9aZ", "function": {"name": "weather", "arguments": '{"location": "Paris"}'}}
    chunks[1]["choices"][0]["delta"]["tool_calls"].append(second)
    for served in (_chunks_exchange(chunks), json_exchange(fold_chat_stream(chunks), CHAT_PATH)):
        upstream.enqueue(served)
        final = (sdk_stream(client, {"model": "chat", "input": "Weather?"})[1] if served.stream
                 else sdk_create(client, {"model": "chat", "input": "Weather?"})[0])
        calls = [(c.call_id, c.name, c.arguments) for c in final.output if c.type == "function_call"]
        assert calls == [(first["id"], "weather", first["function"]["arguments"]),
                         (second["id"], "weather", second["function"]["arguments"])]


def test_content_filter_is_incomplete(gateway: Any, upstream: Any, client: openai.OpenAI) -> None:
    """finish_reason content_filter (openai-text, its finish chunk changed) -> incomplete, both ways."""
    chunks = copy.deepcopy(list(_variants(TEXT)))
    for chunk in chunks:
        for choice in chunk["choices"]:
            if choice.get("finish_reason"):
                choice["finish_reason"] = "content_filter"
    folded = fold_chat_stream(chunks)
    for served in (_chunks_exchange(chunks), json_exchange(folded, CHAT_PATH)):
        upstream.enqueue(served)
        if served.stream:
            _, events, _ = raw_stream(gateway.url, {"model": "chat", "input": "Hello"})
            check_stream(events)
            assert events[-1]["type"] == "response.incomplete"
            response = events[-1]["response"]
        else:
            _, response = sdk_create(client, {"model": "chat", "input": "Hello"})
        assert response["status"] == "incomplete"
        assert response["incomplete_details"] == {"reason": "content_filter"}
        check_response(response, folded)


def test_length_is_incomplete_with_partial_text(gateway: Any, upstream: Any) -> None:
    upstream.enqueue(exchanges(MAX_TOKENS)[0])
    _, events, _ = raw_stream(gateway.url, {"model": "chat", "input": "Hello", "max_output_tokens": 1})
    check_stream(events)
    assert [e["type"] for e in events][-2:] == ["response.output_item.done", "response.incomplete"]
    response = events[-1]["response"]
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    assert response["output"][0]["content"][0]["text"] == '{"'
    assert upstream.requests[-1].json["max_completion_tokens"] == 1


@pytest.mark.parametrize("cut", [3, 150])
def test_stream_cut_short_fails_once(gateway: Any, upstream: Any, cut: int) -> None:
    """The upstream dies mid-stream (no finish_reason, no [DONE]): error + response.failed, once."""
    upstream.enqueue(exchanges(TEXT)[0], fail_after_events=cut)
    _, events, _ = raw_stream(gateway.url, {"model": "chat", "input": "Hello"})
    check_stream(events)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]
    assert sum(e["type"] in ("response.completed", "response.incomplete", "response.failed") for e in events) == 1
    assert response_errors(failed) == set()  # error.code from the SDK's vocabulary (server_error)
    assert events[-2]["code"] and events[-2]["message"]  # the precise code is on the error event


def test_error_chunk_mid_stream_fails_once(gateway: Any, upstream: Any) -> None:
    """OpenRouter-style `data: {"error": ...}` after some text (mistral-text with an error chunk in
    place of its finish chunk): the text so far, then error + response.failed, nothing after."""
    chunks = copy.deepcopy(list(_variants(Path("mistral/vercel-ai/mistral-text.chunks.txt"))))
    chunks[-1] = {"error": {"code": "server_error", "message": "Provider returned error"}}
    upstream.enqueue(_chunks_exchange(chunks))
    _, events, _ = raw_stream(gateway.url, {"model": "chat", "input": "Hello"})
    check_stream(events)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    error = events[-2]
    assert (error["code"], error["message"]) == ("server_error", "Provider returned error")
    assert event_errors(error) == set()
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == \
        "Hello, world! This is a test response."
    assert events[-1]["response"]["status"] == "failed"


def test_stream_without_finish_reason_but_done_completes(gateway: Any, upstream: Any) -> None:
    """OpenRouter (simonw variant_a turn 1) ends a tool-call stream with usage and [DONE] but no
    finish_reason: the answer is whole, so the response completes."""
    rel = Path("openai-chat/simonw-llm/test_tools_streaming_variant_a.yaml")
    assert all(not c.get("finish_reason") for e in exchanges(rel)[0].events() for c in e["choices"])
    upstream.enqueue(exchanges(rel)[0])
    _, events, _ = raw_stream(gateway.url, {"model": "chat", "input": "What is the current llm version?"})
    check_stream(events)
    assert events[-1]["type"] == "response.completed"
    assert [(i["call_id"], i["name"], i["arguments"]) for i in events[-1]["response"]["output"]] == \
        [("0", "llm_version", "{}")]


MISTRAL_CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
providers:
  mistral:
    type: openai-chat
    base_url: {upstream}/v1
    api_key: sk-upstream-secret-mistral-0000
    options: {{max_tokens_param: max_tokens, stream_options: false}}
models:
  magistral:
    routes:
      - provider: mistral
        model: magistral-medium-latest
"""


def test_mistral_style_provider_sends_no_stream_options(upstream: Any, tmp_path: Path) -> None:
    """Mistral answers 422 to `stream_options`; `options.stream_options: false` leaves it out and
    `max_tokens_param: max_tokens` renames the limit. The recorded Magistral stream still gives
    its usage (Mistral sends it unasked)."""
    config = MISTRAL_CONFIG.format(db=tmp_path / "m.db", master=MASTER_KEY, upstream=upstream.url)
    with running_gateway(config) as running:
        rel = Path("mistral/pydantic-ai/test_mistral_model_thinking_part_iter.yaml")
        upstream.enqueue(exchanges(rel)[0])
        _, events, _ = raw_stream(running.url, {"model": "magistral", "input": "How do I cross the street?",
                                                "max_output_tokens": 500})
        check_stream(events)
        sent = upstream.requests[-1].json
        assert "stream_options" not in sent and sent["max_tokens"] == 500 and "max_completion_tokens" not in sent
        assert comparable({**sent, "max_tokens": None}) == comparable(exchanges(rel)[0].request_body)
        final = events[-1]["response"]
        assert final["model"] == "mistral/magistral-medium-latest"
        assert final["usage"]["total_tokens"] == 242
        assert [item["type"] for item in final["output"]] == ["reasoning", "message"]



def test_annotations_come_through_both_ways() -> None:
    """url_citation annotations, on a whole message or in a stream's last delta, end up on the text."""
    citation = {"type": "url_citation", "url_citation": {"url": "https://example.com/", "title": "Example",
                                                         "start_index": 0, "end_index": 5}}
    whole = from_completion({"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Hello", "annotations": [citation]}}]})
    translator = ChunkTranslator()
    events = translator.feed({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]})
    events += translator.feed({"choices": [{"index": 0, "delta": {"content": "lo"}}]})
    last = {"index": 0, "delta": {"annotations": [citation]}, "finish_reason": "stop"}
    events += translator.feed({"choices": [last]})
    events += translator.finish()
    added = [e["annotation"] for e in events if e["type"] == "response.output_text.annotation.added"]
    assert added == [{"type": "url_citation", "url": "https://example.com/", "title": "Example",
                      "start_index": 0, "end_index": 5}]
    assert strip_volatile(events[-1]["response"]) == strip_volatile(whole)
    assert whole["output"][0]["content"][0]["annotations"] == added
