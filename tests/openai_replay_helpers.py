"""Shared helpers for the OpenAI-family replay suites (test_replay_openai_responses/_chat).

What a client of the gateway can observe: the raw SSE stream (sequence numbers, item ordering,
ids), the final Response, its usage and cost, and what Sluice sent upstream. Everything is
checked against numbers taken from the recordings themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter, ValidationError

from tests.conftest import MASTER_KEY
from tests.replay import Exchange, all_recordings, fixtures_root, load

ROOT = fixtures_root()
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Keys that legitimately differ between two answers to the same question.
# The routing trace is volatile too: it times each attempt.
VOLATILE = frozenset({"id", "created_at", "completed_at", "sequence_number", "latency_ms", "ttft_ms"})

_EVENT = TypeAdapter(ResponseStreamEvent)


# --- recordings --------------------------------------------------------------------------------


def exchange_params(*providers: str) -> list[Any]:
    """One pytest param per exchange (file x exchange index) of every recording of `providers`."""
    params = []
    for provider in providers:
        for path in all_recordings(provider):
            for index, _ in enumerate(load(path)):
                rel = path.relative_to(ROOT)
                params.append(pytest.param(rel, index, id=f"{rel}#{index}"))
    return params


@cache
def exchanges(rel: Path) -> tuple[Exchange, ...]:
    return tuple(load(ROOT / rel))


def json_exchange(body: dict[str, Any], path: str, status: int = 200) -> Exchange:
    """A non-streaming exchange serving `body`, e.g. a stream folded into its JSON equivalent."""
    return Exchange(method="POST", path=path, request_body=None, status=status,
                    headers={"content-type": "application/json"}, body=json.dumps(body).encode(), stream=False,
                    source="synthetic")


def client_error(status: int, code: str | None) -> tuple[int, int]:
    """(status the client gets, upstream calls made) when a request's only route answers this error.

    docs/routing.md, "Failures, retries and the client's status": the request's own fault
    (400/413/422) comes back as it is; a rate limit is retried once, then passed on as a 429; the
    provider's credentials, billing or model (401/402/403/404, `insufficient_quota`) are the
    gateway's problem: a 424, like an outage (5xx, retried once first).
    """
    if status in (400, 413, 422):
        return status, 1
    if code == "insufficient_quota" or status in (401, 402, 403, 404):
        return 424, 1
    retried = status in (408, 409, 425, 429) or (status >= 500 and status != 501)
    return (429 if status == 429 else 424), (2 if retried else 1)


# --- talking to the gateway --------------------------------------------------------------------


def raw_stream(base_url: str, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]], bytes]:
    """POST a streaming request with a plain HTTP client; (status, events, raw bytes).

    Each SSE event must carry an `event:` line equal to its data's `type`.
    """
    with httpx.Client(timeout=20) as http, http.stream(
        "POST", f"{base_url}/v1/responses", json={**body, "stream": True},
        headers={"authorization": f"Bearer {MASTER_KEY}"},
    ) as resp:
        raw = resp.read()
        status = resp.status_code
    if status != 200:
        return status, [json.loads(raw)], raw
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name = data = None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        assert data is not None, block
        event = json.loads(data)
        assert name == event["type"], block
        events.append(event)
    return status, events, raw


def sdk_stream(client: openai.OpenAI, body: dict[str, Any]) -> tuple[list[Any], Any]:
    """Stream through `client.responses.stream`; (typed events, final response).

    The SDK's `get_final_response()` only knows `response.completed` (it raises for a stream that
    ends in `response.incomplete`, from OpenAI too); the incomplete Response is then the one the
    terminal event carries.
    """
    model, rest = body["model"], {k: v for k, v in body.items() if k not in ("model", "input", "stream")}
    with client.responses.stream(model=model, input=body["input"], extra_body=rest) as stream:
        events = list(stream)
        if events and events[-1].type == "response.incomplete":
            with pytest.raises(RuntimeError, match=r"response\.completed"):
                stream.get_final_response()
            return events, events[-1].response
        final = stream.get_final_response()
    return events, final


def sdk_create(client: openai.OpenAI, body: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Non-streaming `client.responses.create`; (typed response, wire JSON)."""
    rest = {k: v for k, v in body.items() if k not in ("model", "input", "stream")}
    raw = client.responses.with_raw_response.create(model=body["model"], input=body["input"], extra_body=rest)
    return raw.parse(), json.loads(raw.text)


# --- stream invariants -------------------------------------------------------------------------


def check_stream(events: list[dict[str, Any]], *, contiguous: bool = True) -> None:
    """What every Responses stream guarantees, checked event by event.

    Sequence numbers count from 0 without gaps; `response.created` comes first; exactly one
    terminal event comes last; an item is `added` before anything refers to it and `done` after;
    content/summary parts open before their deltas; each output_index keeps one item id.
    Output indexes grow; `contiguous=False` allows the gaps OpenAI leaves for items it does not
    stream (e.g. hidden reasoning in openai-phase).
    """
    assert [e.get("sequence_number") for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    terminals = [i for i, e in enumerate(events) if e["type"] in TERMINAL]
    assert terminals == [len(events) - 1], [e["type"] for e in events]
    response_id = events[0]["response"]["id"]
    items: dict[int, dict[str, Any]] = {}
    parts: set[tuple[int, str, int]] = set()
    for event in events:
        kind = event["type"]
        if "response" in event:
            assert event["response"]["id"] == response_id
        index = event.get("output_index")
        if kind == "response.output_item.added":
            if contiguous:
                assert index == len(items), f"output_index {index} added out of order"
            else:
                assert index > max(items, default=-1), f"output_index {index} added out of order"
            items[index] = {"id": event["item"].get("id"), "done": False}
            continue
        if index is None:
            continue
        assert index in items, f"{kind} before output_item.added at {index}"
        state = items[index]
        assert not state["done"], f"{kind} after output_item.done at {index}"
        if "item_id" in event:
            assert event["item_id"] == state["id"], f"{kind}: item id changed at output_index {index}"
        if kind == "response.output_item.done":
            assert event["item"].get("id") == state["id"], f"item id changed at output_index {index}"
            assert not any(p[0] == index for p in parts), f"item {index} done with an open part"
            state["done"] = True
        elif kind in ("response.content_part.added", "response.reasoning_summary_part.added"):
            key = _part_key(event)
            assert key not in parts
            parts.add(key)
        elif kind in ("response.content_part.done", "response.reasoning_summary_part.done"):
            key = _part_key(event)
            assert key in parts, f"{kind} without added"
            parts.discard(key)
        elif kind.endswith(".delta") and ("content_index" in event or "summary_index" in event):
            assert _part_key(event) in parts, f"{kind} outside an open part"
    final = events[-1]["response"]
    if final["status"] in ("completed", "incomplete"):
        assert all(state["done"] for state in items.values()), "terminal event with items still open"
        assert [item.get("id") for item in final["output"]] == [items[i]["id"] for i in sorted(items)]


def _part_key(event: dict[str, Any]) -> tuple[int, str, int]:
    if "summary_index" in event:
        return event["output_index"], "summary", event["summary_index"]
    return event["output_index"], "content", event["content_index"]


def fold_deltas(events: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], str]:
    """Concatenate every streamed delta per (kind, output_index, part index)."""
    out: dict[tuple[Any, ...], str] = {}
    for event in events:
        kind = event["type"]
        if not kind.endswith(".delta") or not isinstance(event.get("delta"), str):
            continue
        key = (kind, event.get("output_index"), event.get("content_index", event.get("summary_index")))
        out[key] = out.get(key, "") + event["delta"]
    return out


def final_parts(output: list[dict[str, Any]]) -> dict[tuple[Any, ...], str]:
    """The texts of a final output, keyed like `fold_deltas`, for the parts a stream fills by deltas."""
    out: dict[tuple[Any, ...], str] = {}
    for i, item in enumerate(output):
        kind = item.get("type")
        if kind == "message":
            for j, part in enumerate(item.get("content") or ()):
                if part.get("type") == "output_text":
                    out[("response.output_text.delta", i, j)] = part["text"]
                elif part.get("type") == "refusal":
                    out[("response.refusal.delta", i, j)] = part["refusal"]
        elif kind == "reasoning":
            for j, part in enumerate(item.get("summary") or ()):
                out[("response.reasoning_summary_text.delta", i, j)] = part["text"]
            for j, part in enumerate(item.get("content") or ()):
                out[("response.reasoning_text.delta", i, j)] = part["text"]
        elif kind == "function_call":
            out[("response.function_call_arguments.delta", i, None)] = item["arguments"]
        elif kind == "custom_tool_call":
            out[("response.custom_tool_call_input.delta", i, None)] = item["input"]
        elif kind == "mcp_call":
            out[("response.mcp_call_arguments.delta", i, None)] = item["arguments"]
    return out


def by_position(deltas: dict[tuple[Any, ...], str], events: list[dict[str, Any]]) -> dict[tuple[Any, ...], str]:
    """`fold_deltas` keyed by position in the final output instead of the stream's output_index."""
    added = sorted(e["output_index"] for e in events if e["type"] == "response.output_item.added")
    position = {index: i for i, index in enumerate(added)}
    return {(kind, position[index], part): text for (kind, index, part), text in deltas.items()}


# --- validation with the official SDK types ----------------------------------------------------


def _error_locs(exc: ValidationError) -> set[tuple[Any, ...]]:
    return {tuple(err["loc"]) for err in exc.errors()}


def response_errors(data: dict[str, Any]) -> set[tuple[Any, ...]]:
    """Where `Response.model_validate` rejects `data` (empty set: accepted)."""
    try:
        Response.model_validate(data)
    except ValidationError as exc:
        return _error_locs(exc)
    return set()


def event_errors(data: dict[str, Any]) -> set[tuple[Any, ...]]:
    try:
        _EVENT.validate_python(data)
    except ValidationError as exc:
        return _error_locs(exc)
    return set()


# --- usage and cost ----------------------------------------------------------------------------


def expected_cost(usage: dict[str, Any], input_price: float, cached_price: float, output_price: float) -> float:
    cached = usage["input_tokens_details"]["cached_tokens"]
    created = usage["input_tokens_details"].get("cached_tokens_created", 0)
    uncached = usage["input_tokens"] - cached - created
    return (uncached * input_price + cached * cached_price + created * input_price
            + usage["output_tokens"] * output_price) / 1_000_000


def strip_volatile(value: Any) -> Any:
    """`value` without ids and timestamps (at any depth), for comparing two answers."""
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    return value


def sdk_dump(response: Any) -> dict[str, Any]:
    """A typed SDK response as JSON, without the SDK's client-side parse results."""
    return _drop_keys(response.model_dump(mode="json", by_alias=True, warnings=False), {"parsed", "parsed_arguments"})


def _drop_keys(value: Any, keys: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: _drop_keys(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_drop_keys(v, keys) for v in value]
    return value
