"""Replay every OpenAI Responses recording through the gateway (`type: openai`, passthrough).

Each exchange of each recording is served by the replay server while a real client talks to
the gateway: the official SDK (`responses.create` / `responses.stream`) and a plain HTTP client
for the raw SSE. What the recording says the model answered is what the client must get:
same output (ids made stable), same usage, the route's price applied to it, the gateway's
model label, a stream that is well formed event by event. What Sluice sent upstream is the
client's request minus Sluice's extensions, with the route's model id.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import openai
import pytest

from sluice.canonical.reasoning import seal
from sluice.routing.affinity import derived_prompt_cache_key
from sluice.state.keys import MASTER
from tests.openai_replay_helpers import (
    TERMINAL,
    by_position,
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

MODEL = "gpt-5.2"
LABEL = "replay-openai/gpt-5.2"
PRICE = (1.75, 0.175, 14.0)
# Request fields Sluice keeps to itself or, per the endpoint reference, accepts and ignores.
NOT_FORWARDED = {"routing", "cache_control", "background", "context_management", "conversation", "prompt",
                 "safety_identifier", "service_tier", "truncation", "previous_response_id"}

PARAMS = exchange_params("openai-responses")

# The SDK's own stream accumulator warns when it re-serializes items newer than its types
# (web_search_call sources of type "api" in a 2026 recording); the accepted events are what count.
pytestmark = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")


# --- what the recording says -------------------------------------------------------------------


def client_body(rel: Path, index: int) -> dict[str, Any]:
    """The client's request: the recorded one where there is one (same tools, text.format, include,
    reasoning...), aimed at the gateway's model. Stored conversations are not supported, so
    `previous_response_id` is left out (the recorded inputs carry the whole history anyway)."""
    recorded = exchanges(rel)[index].request_body
    body = copy.deepcopy(recorded) if recorded else {"input": "Hello"}
    body = {k: v for k, v in body.items() if v is not None and k not in ("previous_response_id", "stream")}
    if not 0 <= body.get("temperature", 1) <= 2:
        del body["temperature"]  # Sluice itself rejects it: test_invalid_temperature_is_rejected_before_upstream
    body["model"] = MODEL
    return body


def recorded_events(rel: Path, index: int) -> list[dict[str, Any]]:
    return list(exchanges(rel)[index].events())


def recorded_final(rel: Path, index: int) -> dict[str, Any]:
    """The upstream's own final Response: the JSON body, or the stream's terminal event."""
    ex = exchanges(rel)[index]
    if not ex.stream:
        return ex.json()
    terminal = recorded_events(rel, index)[-1]
    assert terminal["type"] in TERMINAL
    return terminal["response"]


def expected_output(rel: Path, index: int) -> list[dict[str, Any]]:
    """The recorded output, each item under the first id the stream gave its output_index."""
    output = copy.deepcopy(recorded_final(rel, index)["output"])
    if exchanges(rel)[index].stream:
        first: dict[int, str] = {}
        for event in recorded_events(rel, index):
            if event["type"] == "response.output_item.added":
                first.setdefault(event["output_index"], event["item"]["id"])
        for position, item in enumerate(output):
            if position in first:
                item["id"] = first[position]
    return output


def expected_status(recorded: dict[str, Any]) -> str:
    status = recorded.get("status")
    if status in ("completed", "incomplete", "failed"):
        return status
    return "incomplete" if recorded.get("incomplete_details") else "completed"  # e.g. a hand-made "complete"


def check_usage_and_cost(response: dict[str, Any], recorded: dict[str, Any]) -> None:
    usage, want = response["usage"], recorded.get("usage") or {}
    details, want_details = usage["input_tokens_details"], want.get("input_tokens_details") or {}
    assert usage["input_tokens"] == want.get("input_tokens", 0)
    assert usage["output_tokens"] == want.get("output_tokens", 0)
    assert usage["total_tokens"] == want.get("total_tokens", 0)
    assert details["cached_tokens"] == want_details.get("cached_tokens", 0)
    written = want_details.get("cache_write_tokens", 0)
    assert details["cached_tokens_created"] == details["cache_write_tokens"] == written
    assert usage["output_tokens_details"]["reasoning_tokens"] == \
        (want.get("output_tokens_details") or {}).get("reasoning_tokens", 0)
    # Priced from the recording's own numbers, not from what the gateway reported.
    want_usage = {"input_tokens": want.get("input_tokens", 0), "output_tokens": want.get("output_tokens", 0),
                  "input_tokens_details": {"cached_tokens": want_details.get("cached_tokens", 0),
                                           "cached_tokens_created": want_details.get("cache_write_tokens", 0)}}
    assert response["cost"]["total"] == pytest.approx(expected_cost(want_usage, *PRICE), abs=1e-12)


def check_final(response: dict[str, Any], rel: Path, index: int) -> None:
    """A final Response (wire JSON) against the recording."""
    recorded = recorded_final(rel, index)
    assert response["object"] == "response"
    assert response["id"].startswith("resp_")
    assert response["model"] == LABEL
    assert response["status"] == expected_status(recorded)
    assert response["output"] == expected_output(rel, index)
    assert response.get("incomplete_details") == recorded.get("incomplete_details")
    check_usage_and_cost(response, recorded)
    # The official types accept whatever the recording itself passes (Sluice adds no error).
    assert response_errors(response) <= response_errors({**recorded, "model": LABEL})


def canonical_input(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The client's input in its explicit form: a list of typed items, message content as parts."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    items = []
    for item in value:
        if item.get("type", "message") == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item["role"] == "assistant" else "input_text"
            item = {**item, "content": [{"type": part, "text": item["content"]}]}
        items.append({"type": "message", **item} if "type" not in item else item)
    return items


def check_sent(upstream: Any, body: dict[str, Any], stream: bool) -> None:
    """Sluice forwards the client's request, with the route's model id and its own keys removed.

    The conversation goes out in its explicit form (what the client wrote as a string is a
    message with an input_text part): the same request to OpenAI, with one canonical copy inside
    Sluice that every stage and adapter reads.
    """
    sent = upstream.requests[-1]
    assert sent.path == "/v1/responses"
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret-openai-0000"
    want = {k: v for k, v in body.items() if k not in NOT_FORWARDED}
    want["input"] = canonical_input(body["input"])
    # A request without a prompt_cache_key gets one per API key (and end user), as the reference does.
    want.setdefault("prompt_cache_key", derived_prompt_cache_key(MASTER, body.get("user")))
    assert sent.json == {**want, "model": MODEL, "stream": stream}


# --- every exchange ----------------------------------------------------------------------------


@pytest.mark.parametrize(("rel", "index"), PARAMS)
def test_replay_sdk(gateway: Any, upstream: Any, client: openai.OpenAI, rel: Path, index: int) -> None:
    """The official SDK gets the recorded answer (or the recorded error) through the gateway."""
    ex = exchanges(rel)[index]
    body = client_body(rel, index)
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
        assert info.value.body["param"] == want_param
        assert info.value.body["code"] == err.get("code")
        assert len(upstream.requests) == calls
        check_sent(upstream, body, ex.stream)
        # A streaming request refused upstream is refused before any SSE: a plain HTTP error.
        upstream.enqueue([ex] * calls)
        status, (payload,), _ = raw_stream(gateway.url, body)
        assert status == want_status and payload["error"]["param"] == want_param
        assert err["message"] in payload["error"]["message"]
        return
    upstream.enqueue(ex)
    recorded = recorded_final(rel, index)
    if ex.stream and recorded["status"] == "failed":
        with pytest.raises(openai.APIError) as info:
            sdk_stream(client, body)
        assert recorded["error"]["message"] in info.value.message
        if fails_before_content(rel, index):
            # Nothing had reached the client: the route failed like an HTTP error would have.
            assert isinstance(info.value, openai.APIStatusError)
            assert info.value.body["code"] == recorded["error"]["code"]
        return
    if ex.stream:
        events, final = sdk_stream(client, body)
        types = [e.type for e in events]
        assert types == [e["type"] for e in recorded_events(rel, index)]
        deltas = fold_deltas(recorded_events(rel, index))
        text = "".join(v for k, v in deltas.items() if k[0] == "response.output_text.delta")
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text
    else:
        final, wire = sdk_create(client, body)
        check_final(wire, rel, index)
    check_sent(upstream, body, ex.stream)
    # What a user reads off the typed response.
    assert final.model == LABEL
    assert final.status == expected_status(recorded)
    output = expected_output(rel, index)
    texts = [p["text"] for item in output if item["type"] == "message"
             for p in item["content"] if p["type"] == "output_text"]
    assert final.output_text == "".join(texts)
    calls = [(i["call_id"], i["name"], i["arguments"]) for i in output if i["type"] == "function_call"]
    assert [(i.call_id, i.name, i.arguments) for i in final.output if i.type == "function_call"] == calls
    summaries = [[s["text"] for s in i.get("summary") or ()] for i in output if i["type"] == "reasoning"]
    assert [[s.text for s in i.summary] for i in final.output if i.type == "reasoning"] == summaries
    raw_cot = [[c["text"] for c in i.get("content") or ()] for i in output if i["type"] == "reasoning"]
    assert [[c.text for c in i.content or ()] for i in final.output if i.type == "reasoning"] == raw_cot
    encrypted = [i.get("encrypted_content") for i in output if i["type"] == "reasoning"]
    assert [i.encrypted_content for i in final.output if i.type == "reasoning"] == encrypted
    assert [i.id for i in final.output] == [i["id"] for i in output]
    assert final.usage.total_tokens == recorded["usage"]["total_tokens"]


def fails_before_content(rel: Path, index: int) -> bool:
    """The recorded stream reports an error before any output (after the lifecycle events)."""
    lifecycle = ("response.created", "response.in_progress", "response.queued")
    first = next(e for e in recorded_events(rel, index) if e["type"] not in lifecycle)
    return first["type"] in ("error", "response.failed")


STREAMS = [p for p in PARAMS if exchanges(p.values[0])[p.values[1]].stream and exchanges(p.values[0])[p.values[1]]
           .status == 200 and not fails_before_content(*p.values)]


@pytest.mark.parametrize(("rel", "index"), STREAMS)
def test_replay_raw_stream(gateway: Any, upstream: Any, rel: Path, index: int) -> None:
    """The raw SSE: well formed, the recorded events in the recorded order, final = recording."""
    upstream.enqueue(exchanges(rel)[index])
    body = client_body(rel, index)
    status, events, _ = raw_stream(gateway.url, body)
    assert status == 200
    check_stream(events, contiguous=False)
    check_sent(upstream, body, True)
    recorded = recorded_events(rel, index)
    assert [e["type"] for e in events] == [e["type"] for e in recorded]
    for mine, theirs in zip(events, recorded, strict=True):
        # Each event is accepted by the SDK's types unless the recorded one already was not.
        assert event_errors(mine) <= event_errors({**theirs, "sequence_number": 0}), mine["type"]
    final = events[-1]["response"]
    if final["status"] == "failed":
        return
    check_final(final, rel, index)
    # The deltas add up to the final text wherever they do in the recording (some vercel
    # fixtures were trimmed: openai-phase keeps 2 of 37 deltas), and they are the recorded ones.
    assert fold_deltas(events) == fold_deltas(recorded)
    assert _unmatched_parts(events) == _unmatched_parts(recorded)


def _unmatched_parts(events: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    parts = final_parts(events[-1]["response"]["output"])
    return {key for key, text in by_position(fold_deltas(events), events).items() if parts[key] != text}


EQUIVALENT = [p for p in STREAMS if recorded_final(*p.values)["status"] != "failed"]


@pytest.mark.parametrize(("rel", "index"), EQUIVALENT)
def test_stream_and_non_stream_agree(gateway: Any, upstream: Any, client: openai.OpenAI, rel: Path,
                                     index: int) -> None:
    """The stream and its own `response.completed` served as a JSON body give the same Response."""
    ex = exchanges(rel)[index]
    body = client_body(rel, index)
    upstream.enqueue(ex)
    _, streamed = sdk_stream(client, body)
    upstream.enqueue(json_exchange(recorded_final(rel, index), ex.path))
    created, _ = sdk_create(client, body)
    assert strip_volatile(sdk_dump(streamed)) == strip_volatile(sdk_dump(created))


# --- specific behaviour ------------------------------------------------------------------------

ERROR_STREAM = Path("openai-responses/vercel-ai/openai-error.1.chunks.txt")
BASIC_STREAM = Path("openai-chat/vercel-ai/openai-text.chunks.txt")
ROTATION = Path("openai-responses/vercel-ai/github-copilot-id-rotation.1.chunks.txt")
LOGPROBS = Path("openai-responses/pydantic-ai/test_openai_instructions_with_responses_logprobs_streaming.yaml")
TEMPERATURE = Path("openai-responses/pydantic-ai/test_openai_responses_model_http_error.yaml")
PREVIOUS = Path("openai-responses/pydantic-ai/test_openai_previous_response_id.yaml")
ENCRYPTED = Path("openai-responses/vercel-ai/openai-reasoning-encrypted-content.1.chunks.txt")


def test_error_before_content_is_the_routes_failure(gateway: Any, upstream: Any, client: openai.OpenAI) -> None:
    """An `error` event before any output fails the route like an HTTP error: nothing was sent yet."""
    upstream.enqueue(exchanges(ERROR_STREAM)[0])
    status, (payload,), _ = raw_stream(gateway.url, {"model": MODEL, "input": "Hello"})
    want = recorded_events(ERROR_STREAM, 0)[2]["error"]
    # insufficient_quota: OpenAI's 429 for an exhausted balance, the operator's billing: a 424,
    # not a rate limit the client could wait out.
    assert status == 424
    assert payload["error"]["code"] == want["code"] and want["message"] in payload["error"]["message"]
    # With a fallback, the client sees one clean stream from the next route.
    upstream.enqueue([exchanges(ERROR_STREAM)[0], exchanges(BASIC_STREAM)[0]])
    with client.responses.stream(model=MODEL, input="Hello",
                                 extra_body={"routing": {"model": {"fallbacks": ["chat-model"]}}}) as stream:
        final = stream.get_final_response()
    assert final.model == "replay-chat/gpt-4o-2024-08-06"
    assert [r.path for r in upstream.requests[-2:]] == ["/v1/responses", "/v1/chat/completions"]


def _with_error_after_content(failed_only: bool) -> Any:
    """A recorded stream cut after its first text delta by an upstream error."""
    ex = exchanges(Path("openai-responses/simonw-llm/test_responses_basic_streaming.yaml"))[0]
    kept = []
    for name, data in ex.sse_events():
        kept.append((name, data))
        if json.loads(data)["type"] == "response.output_text.delta":
            break
    error = {"code": "server_error", "message": "The model crashed.", "param": None}
    failed = {"type": "response.failed", "response": {"id": "resp_x", "status": "failed", "output": [],
                                                      "error": error}}
    if not failed_only:
        kept.append(("error", json.dumps({"type": "error", "error": error})))
    kept.append(("response.failed", json.dumps(failed)))
    body = "".join(f"event: {name}\ndata: {data}\n\n" for name, data in kept).encode()
    return dataclasses.replace(ex, body=body)


@pytest.mark.parametrize("failed_only", [False, True], ids=["error-then-failed", "failed-alone"])
def test_error_after_content_ends_once_with_error_then_failed(gateway: Any, upstream: Any,
                                                               failed_only: bool) -> None:
    """After output reached the client: one `error` event, then `response.failed`, nothing after.

    The `error` event is there even when the upstream sent `response.failed` alone.
    """
    upstream.enqueue(_with_error_after_content(failed_only))
    _, events, _ = raw_stream(gateway.url, {"model": MODEL, "input": "Hello"})
    check_stream(events)
    kinds = [e["type"] for e in events]
    assert "response.output_text.delta" in kinds
    assert kinds[-2:] == ["error", "response.failed"] and kinds.count("error") == 1
    error, failed = events[-2], events[-1]["response"]
    assert (error["code"], error["message"], error["param"]) == ("server_error", "The model crashed.", None)
    assert event_errors(error) == set()
    assert failed["status"] == "failed" and failed["error"] == {"code": "server_error",
                                                               "message": "The model crashed."}
    assert failed["model"] == LABEL
    # The provider billed what it generated: usage is estimated from the text, and priced.
    assert failed["usage"]["input_tokens"] >= 1 and failed["usage"]["output_tokens"] >= 1
    assert failed["cost"]["total"] > 0
    assert response_errors(failed) == set()


def test_rotating_item_ids_are_made_stable(gateway: Any, upstream: Any, client: openai.OpenAI) -> None:
    """GitHub Copilot rotates item ids on every event; the client sees one id per item."""
    recorded = recorded_events(ROTATION, 0)
    rotating = {e.get("item_id") or e.get("item", {}).get("id") for e in recorded if "output_index" in e}
    assert len(rotating) > 10  # the recording really rotates
    upstream.enqueue(exchanges(ROTATION)[0])
    _, events, _ = raw_stream(gateway.url, {"model": MODEL, "input": "Hello"})
    check_stream(events)
    ids = {}
    for event in events:
        if "output_index" in event:
            ids.setdefault(event["output_index"], set()).add(event.get("item_id") or event["item"]["id"])
    assert {k: len(v) for k, v in ids.items()} == {0: 1, 1: 1}
    upstream.enqueue(exchanges(ROTATION)[0])
    _, final = sdk_stream(client, {"model": MODEL, "input": "Hello"})
    assert [item.id for item in final.output] == [next(iter(ids[0])), next(iter(ids[1]))]
    assert final.output_text.startswith("There are **3** letter")


def test_logprobs_reach_the_client(gateway: Any, upstream: Any, client: openai.OpenAI) -> None:
    body = client_body(LOGPROBS, 0)
    assert body["include"] == ["message.output_text.logprobs"]
    want = [lp for e in recorded_events(LOGPROBS, 0) if e["type"] == "response.output_text.delta"
            for lp in e["logprobs"]]
    assert want and all("top_logprobs" in lp for lp in want)
    upstream.enqueue(exchanges(LOGPROBS)[0])
    events, final = sdk_stream(client, body)
    got = [lp for e in events if e.type == "response.output_text.delta" for lp in e.logprobs]
    assert [(lp.token, lp.logprob, lp.bytes) for lp in got] == [(lp["token"], lp["logprob"], lp["bytes"])
                                                                for lp in want]
    # The recorded response.completed rounds tiny logprobs to 0.0; the final carries its values.
    final_want = recorded_final(LOGPROBS, 0)["output"][0]["content"][0]["logprobs"]
    part = final.output[0].content[0]
    assert [(lp.token, lp.logprob) for lp in part.logprobs] == [(lp["token"], lp["logprob"]) for lp in final_want]
    assert [lp.logprob for lp in part.logprobs] == pytest.approx([lp["logprob"] for lp in want], abs=1e-4)
    assert upstream.requests[-1].json["include"] == ["message.output_text.logprobs"]


def test_invalid_temperature_is_rejected_before_upstream(gateway: Any, upstream: Any,
                                                          client: openai.OpenAI) -> None:
    """The recorded request (temperature -1) never leaves the gateway; the recorded 400 itself,
    when an upstream does send it, reaches the client with its code and param."""
    body = exchanges(TEMPERATURE)[0].request_body
    assert body["temperature"] == -1
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=body["input"], temperature=-1)
    assert info.value.body["param"] == "temperature"
    assert upstream.requests == []
    upstream.enqueue(exchanges(TEMPERATURE)[0])
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=body["input"], temperature=0.5)
    recorded = exchanges(TEMPERATURE)[0].json()["error"]
    assert info.value.body["code"] == recorded["code"] == "decimal_below_min_value"
    assert info.value.body["param"] == "temperature"


def test_previous_response_id_is_not_found(gateway: Any, upstream: Any, client: openai.OpenAI) -> None:
    """Turn 2 of the cassette continues a stored response; Sluice stores none and says so."""
    recorded = exchanges(PREVIOUS)[1].request_body
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=MODEL, input=recorded["input"],
                                previous_response_id=recorded["previous_response_id"])
    assert info.value.body["code"] == "previous_response_not_found"
    assert upstream.requests == []


def test_sluice_extensions_are_stripped(gateway: Any, upstream: Any, client: openai.OpenAI) -> None:
    """routing / cache_control / is_error and ignored fields never reach OpenAI; the rest does."""
    ttl = {"type": "ephemeral", "ttl": "5m"}
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}},
            "strict": True}
    body = {
        "model": "gpt5",  # an alias: the route's upstream id is what OpenAI sees
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}], "cache_control": ttl},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA-openai-own"},
            {"type": "reasoning", "id": "rs_2", "summary": [],
             "encrypted_content": seal("anthropic", {"signature": "x"})},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}",
             "cache_control": ttl},
            {"type": "function_call_output", "call_id": "call_1", "output": "boom", "is_error": True},
        ],
        "tools": [{**tool, "cache_control": ttl}],
        "routing": {"model": {"fallbacks": ["chat-model"]}},
        "cache_control": ttl,
        "prompt_cache_retention": "in-memory",
        "service_tier": "flex",
        "truncation": "auto",
        "safety_identifier": "user-1",
        "metadata": {"k": "v"},
        "include": ["reasoning.encrypted_content"],
        "text": {"verbosity": "low"},
        "reasoning": {"effort": "low", "summary": "auto"},
        "store": False,
        "temperature": 0.3,
    }
    upstream.enqueue(exchanges(Path("openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml"))[0])
    response, _ = sdk_create(client, body)
    assert response.model == LABEL
    sent = upstream.requests[-1].json
    assert sent == {
        "model": MODEL,
        "stream": False,
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA-openai-own"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "Error: boom"},  # is_error, said
        ],
        "tools": [tool],
        "prompt_cache_key": derived_prompt_cache_key(MASTER, None),
        "prompt_cache_retention": "in_memory",
        "metadata": {"k": "v"},
        "include": ["reasoning.encrypted_content"],
        "text": {"verbosity": "low"},
        "reasoning": {"effort": "low", "summary": "auto"},
        "store": False,
        "temperature": 0.3,
    }


def test_encrypted_reasoning_round_trips(gateway: Any, upstream: Any, client: openai.OpenAI) -> None:
    """Turn 1's reasoning item (with encrypted_content) goes back to OpenAI untouched on turn 2."""
    upstream.enqueue(exchanges(ENCRYPTED)[0])
    body = {"model": MODEL, "input": "Weather in 3 cities?", "include": ["reasoning.encrypted_content"],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}]}
    _, first = sdk_stream(client, body)
    reasoning = next(item for item in first.output if item.type == "reasoning")
    assert reasoning.encrypted_content and reasoning.summary
    history = [{"role": "user", "content": "Weather in 3 cities?"},
               *(item.model_dump(exclude_none=True) for item in first.output)]
    call = first.output[-1]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny"})
    upstream.enqueue(exchanges(ENCRYPTED)[1])
    sdk_stream(client, {**body, "input": history})
    sent = upstream.requests[-1].json["input"]
    assert sent[1]["type"] == "reasoning"
    assert sent[1]["encrypted_content"] == reasoning.encrypted_content
    assert sent[1]["id"] == reasoning.id
