"""The Response object clients receive: echo of the request, upstream result, gateway fields.

One function, `finalize`, builds it for both the streaming and the non-streaming path, so a
stream's terminal event and the non-streaming body cannot drift apart.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from sluice.canonical.request import CanonicalRequest

# Request fields a Response echoes back, with the value OpenAI reports when the request omits them.
# They report what the client asked for, whatever the upstream says, so that every route answers
# alike (an OpenAI upstream would otherwise echo its own defaults where others say null).
_ECHO_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "prompt_cache_retention": None,
    "reasoning": None,
    "safety_identifier": None,
    "store": True,
    "temperature": None,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": None,
    "top_p": None,
    "user": None,
    "frequency_penalty": None,
    "presence_penalty": None,
    "prompt": None,
    "conversation": None,
}
# Fields the endpoint reference marks unsupported that describe how the request was served: they
# report what Sluice did (no service tier chosen, no truncation, no background run), not what was
# asked, since nothing applied the request's value.
_NOT_APPLIED: dict[str, Any] = {"service_tier": None, "truncation": "disabled", "background": False}

_GATEWAY_FIELDS = frozenset({"id", "object", "model", "created_at", "usage", "cost"})
# Envelope fields whose value comes from the upstream's answer.
_UPSTREAM_FIELDS = frozenset({"status", "output", "error", "incomplete_details"})


def normalize_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Usage in the canonical shape, every counter present.

    `input_tokens` counts every prompt token, cached ones included (OpenAI's convention);
    `cached_tokens` were read from a prompt cache, `cached_tokens_created` written to one, and
    `cache_write_1h_tokens` are those of the writes made for an hour (Anthropic's 1h TTL, billed
    higher than 5-minute writes; 0 where the upstream does not split writes by TTL).
    """
    usage = usage or {}
    details = usage.get("input_tokens_details") or {}
    out_details = usage.get("output_tokens_details") or {}
    input_tokens = int(usage.get("input_tokens") or 0)
    output_tokens = int(usage.get("output_tokens") or 0)
    created = details.get("cached_tokens_created")
    if created is None:
        created = details.get("cache_write_tokens") or 0
    normalized: dict[str, Any] = {
        "input_tokens": input_tokens,
        # `cached_tokens_created` is the reference's name, `cache_write_tokens` OpenAI's: both are sent.
        "input_tokens_details": {"cached_tokens": int(details.get("cached_tokens") or 0),
                                 "cached_tokens_created": int(created), "cache_write_tokens": int(created),
                                 "cache_write_1h_tokens": int(details.get("cache_write_1h_tokens") or 0)},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": int(out_details.get("reasoning_tokens") or 0)},
        "total_tokens": int(usage.get("total_tokens") or input_tokens + output_tokens),
    }
    if usage.get("tool_calls"):
        normalized["tool_calls"] = usage["tool_calls"]
    return normalized


def echo(parsed: CanonicalRequest) -> dict[str, Any]:
    """The request fields a Response reports (pass the request as the client sent it)."""
    req = parsed.req
    fields = {}
    for key, default in _ECHO_DEFAULTS.items():
        value = getattr(req, key)
        if value is None:
            value = default
        elif isinstance(value, msgspec.Struct):
            value = msgspec.to_builtins(value)
        fields[key] = value
    if fields["prompt_cache_retention"] == "in-memory":
        fields["prompt_cache_retention"] = "in_memory"
    if isinstance(fields["conversation"], str):
        fields["conversation"] = {"id": fields["conversation"]}  # a Response names it as an object
    fields.update(_NOT_APPLIED)
    return fields


def skeleton(parsed: CanonicalRequest, response_id: str, model: str, created_at: int) -> dict[str, Any]:
    """The in-progress Response carried by `response.created` / `response.in_progress`."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
        **echo(parsed),
        "usage": None,
    }


def finalize(envelope: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Merge an upstream result (status, output, usage, ...) into a copy of the `skeleton` Response."""
    response = dict(envelope)
    for key, value in result.items():
        if key not in _GATEWAY_FIELDS and key not in response:
            response[key] = value  # upstream-only fields; the echo and the envelope are the gateway's
        elif key in _UPSTREAM_FIELDS:
            response[key] = value
    status = response.get("status")
    if status in (None, "in_progress"):
        response["status"] = status = "completed"
    # Both timestamps are the gateway's clock, so completed_at never precedes created_at.
    response["completed_at"] = int(time.time()) if status == "completed" else None
    usage = response["usage"] = normalize_usage(result.get("usage"))
    if "tool_calls" not in usage:
        # Upstreams that report no tool counts (OpenAI's usage has none): count the calls made.
        searches = sum(1 for item in response["output"] if item.get("type") == "web_search_call")
        if searches:
            usage["tool_calls"] = {"web_search": searches}
    return response
