"""Claude's request rules are the same on the Anthropic adapter and on Claude models on Bedrock.

Each test sends one Responses request through both adapters' `build_body` and reads the decision
back from each wire shape: thinking budget and max tokens, sampling parameters, tool choice with
thinking, cache breakpoints. The rules themselves live in `providers/claude_policy.py`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sluice.canonical.request import parse_request
from sluice.providers import anthropic_request, bedrock_request
from sluice.providers.claude_policy import ANSWER_ROOM, THINKING_BUDGETS

ANTHROPIC_MODEL = "claude-sonnet-4-5"
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
OPUS_4_OUTPUT_LIMIT = 32000  # the smallest output limit of a Claude model that thinks


def _parsed(request: dict[str, Any]) -> Any:
    return parse_request(json.dumps({"model": "m", "input": "hi", **request}).encode())


def anthropic(request: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the Anthropic adapter decided: thinking, max_tokens, sampling, tool_choice."""
    body = anthropic_request.build_body(_parsed(request), ANTHROPIC_MODEL, False, options or {})[0]
    return {"thinking": body.get("thinking"), "effort": (body.get("output_config") or {}).get("effort"),
            "max_tokens": body["max_tokens"], "temperature": body.get("temperature"), "top_p": body.get("top_p"),
            "tool_choice": body.get("tool_choice")}


def bedrock(request: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the Bedrock adapter decided for a Claude model, in the same terms."""
    body = bedrock_request.build_body(_parsed(request), BEDROCK_MODEL, options or {})[0]
    inference = body.get("inferenceConfig") or {}
    choice = (body.get("toolConfig") or {}).get("toolChoice")
    return {"thinking": (body.get("additionalModelRequestFields") or {}).get("thinking"),
            "effort": (body.get("outputConfig") or {}).get("effort"), "max_tokens": inference.get("maxTokens"),
            "temperature": inference.get("temperature"), "top_p": inference.get("topP"),
            "tool_choice": None if choice is None else next(iter(choice))}


@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high", "xhigh"])
def test_one_budget_table(effort: str) -> None:
    budget = THINKING_BUDGETS[effort]
    # Without max_output_tokens, max_tokens grows to budget + room on both (Anthropic: only when its
    # default, here the option max_tokens, would not exceed the budget).
    a = anthropic({"reasoning": {"effort": effort}}, {"max_tokens": 1000})
    b = bedrock({"reasoning": {"effort": effort}})
    assert a["thinking"] == b["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert a["max_tokens"] == b["max_tokens"] == budget + ANSWER_ROOM
    assert budget + ANSWER_ROOM <= OPUS_4_OUTPUT_LIMIT  # a grown max_tokens is never refused


def test_documented_budgets() -> None:
    assert dict(THINKING_BUDGETS) == {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 24576}
    assert anthropic({"reasoning": {"effort": "xhigh"}})["thinking"]["budget_tokens"] == 24576
    assert bedrock({"reasoning": {"effort": "xhigh"}})["thinking"]["budget_tokens"] == 24576


@pytest.mark.parametrize(("max_output_tokens", "budget"), [(20000, 16384), (16384, 8192), (4000, 2000), (2000, 1024),
                                                           (1025, 1024), (1024, None), (800, None)])
def test_explicit_cap_shrinks_the_budget(max_output_tokens: int, budget: int | None) -> None:
    # max_output_tokens includes reasoning: the budget stays under it, or thinking is left off.
    request = {"reasoning": {"effort": "high"}, "max_output_tokens": max_output_tokens}
    a, b = anthropic(request), bedrock(request)
    expected = None if budget is None else {"type": "enabled", "budget_tokens": budget}
    assert a["thinking"] == b["thinking"] == expected
    assert a["max_tokens"] == b["max_tokens"] == max_output_tokens


def test_budget_override_option() -> None:
    options, request = {"thinking_budgets": {"low": 3000}}, {"reasoning": {"effort": "low"}}
    assert anthropic(request, options)["thinking"] == bedrock(request, options)["thinking"] == {
        "type": "enabled", "budget_tokens": 3000}


@pytest.mark.parametrize(("effort", "adaptive_effort"), [("minimal", "low"), ("low", "low"), ("medium", "medium"),
                                                         ("high", "high"), ("xhigh", "xhigh")])
def test_adaptive_thinking(effort: str, adaptive_effort: str) -> None:
    a = anthropic({"reasoning": {"effort": effort}}, {"thinking": "adaptive"})
    b = bedrock({"reasoning": {"effort": effort}}, {"reasoning": "adaptive"})
    assert a["thinking"] == b["thinking"] == {"type": "adaptive"}
    assert a["effort"] == b["effort"] == adaptive_effort


@pytest.mark.parametrize(("request_", "temperature", "top_p"), [
    ({"temperature": 0.3, "top_p": 0.8}, 0.3, None),  # newer Claude models reject both: temperature wins
    ({"temperature": 1.7}, 1.0, None),  # Claude's range is 0..1
    ({"top_p": 0.8}, None, 0.8),
    ({"temperature": 0.3, "top_p": 0.8, "reasoning": {"effort": "low"}}, None, None),  # none while thinking
])
def test_sampling(request_: dict[str, Any], temperature: float | None, top_p: float | None) -> None:
    a, b = anthropic(request_), bedrock(request_)
    assert (a["temperature"], a["top_p"]) == (b["temperature"], b["top_p"]) == (temperature, top_p)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "get_weather"}])
def test_forced_tool_leaves_thinking_off(choice: Any) -> None:
    request = {"reasoning": {"effort": "high"}, "tools": [TOOL], "tool_choice": choice}
    a, b = anthropic(request), bedrock(request)
    assert a["thinking"] is None and b["thinking"] is None
    assert a["tool_choice"]["type"] in ("any", "tool") and b["tool_choice"] in ("any", "tool")


def test_auto_tool_choice_keeps_thinking() -> None:
    request = {"reasoning": {"effort": "low"}, "tools": [TOOL], "tool_choice": "auto"}
    assert anthropic(request)["thinking"] == bedrock(request)["thinking"] == {"type": "enabled", "budget_tokens": 2048}


def test_tool_turn_without_its_thinking_leaves_thinking_off() -> None:
    # The client did not send the sealed reasoning back: the open tool turn has no thinking block.
    history = [{"role": "user", "content": "Weather?"},
               {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
               {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]
    request = {"input": history, "tools": [TOOL], "reasoning": {"effort": "low"}}
    assert anthropic(request)["thinking"] is None
    assert bedrock(request)["thinking"] is None


# --- cache breakpoints --------------------------------------------------------------------------


def _turns(*ttls: str | None) -> list[dict[str, Any]]:
    """Alternating user/assistant messages, each a breakpoint with this TTL (None: 5m default)."""
    turns = []
    for i, ttl in enumerate(ttls):
        cache = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
        turns.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}", "cache_control": cache})
    return turns


def anthropic_breakpoints(request: dict[str, Any]) -> list[str]:
    """TTL of each breakpoint Anthropic gets, in prompt order ("5m" when unset)."""
    body = anthropic_request.build_body(_parsed(request), ANTHROPIC_MODEL, False, {})[0]
    return [block["cache_control"].get("ttl", "5m") for message in body["messages"] for block in message["content"]
            if "cache_control" in block]


def bedrock_breakpoints(request: dict[str, Any]) -> list[str]:
    body = bedrock_request.build_body(_parsed(request), BEDROCK_MODEL, {})[0]
    return [block["cachePoint"].get("ttl", "5m") for message in body["messages"] for block in message["content"]
            if "cachePoint" in block]


@pytest.mark.parametrize(("ttls", "expected"), [
    # 5m breakpoints stay 5m (they were upgraded to 1h, which Anthropic bills at 2x input instead of 1.25x).
    ((None, None, None), ["5m", "5m", "5m"]),
    ((None, None, None, None, None, None), ["5m", "5m", "5m", "5m"]),
    # A 1h breakpoint upgrades the ones before it (longer TTLs first), not the ones after.
    ((None, "1h", None), ["1h", "1h", "5m"]),
    # Over the limit: the first and the latest three stay.
    (("1h", None, None, None, None, None), ["1h", "5m", "5m", "5m"]),
    ((None, None, None, None, None, "1h"), ["1h", "1h", "1h", "1h"]),
])
def test_cache_breakpoints(ttls: tuple[str | None, ...], expected: list[str]) -> None:
    request = {"input": _turns(*ttls)}
    assert anthropic_breakpoints(request) == bedrock_breakpoints(request) == expected


def test_over_the_limit_keeps_the_first_and_the_latest() -> None:
    request = {"input": _turns(*[None] * 6)}
    body = anthropic_request.build_body(_parsed(request), ANTHROPIC_MODEL, False, {})[0]
    kept = [message["content"][0]["text"] for message in body["messages"] if "cache_control" in message["content"][0]]
    assert kept == ["turn 0", "turn 3", "turn 4", "turn 5"]
    converse = bedrock_request.build_body(_parsed(request), BEDROCK_MODEL, {})[0]
    kept = [message["content"][i - 1]["text"] for message in converse["messages"]
            for i, block in enumerate(message["content"]) if "cachePoint" in block]
    assert kept == ["turn 0", "turn 3", "turn 4", "turn 5"]
