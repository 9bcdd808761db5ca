"""Claude's request rules, shared by the Anthropic adapter and Claude models on Bedrock.

The Anthropic Messages API and Bedrock Converse (`anthropic.claude-*` models) serve the same models
with the same constraints on extended thinking, sampling, tool choice, strict tools and cache
breakpoints; only the wire field names differ. Each rule is decided here once and each adapter writes the decision in
its own shape, so the two cannot drift apart (they had: xhigh thought with 24576 tokens on one and
24000 on the other, and a forced structured-output tool turned thinking off on one and was relaxed
to `auto` on the other). The JSON schema subset Claude accepts is in `claude_schema`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

# Thinking `budget_tokens` per reasoning effort; the provider option `thinking_budgets` overrides it.
# Anthropic publishes no per-effort table (only the 1024 minimum), so this is the one the Anthropic
# adapter has always documented (docs/providers.md): 1, 2, 8, 16 and 24 times 1024. It is the table
# for both adapters because every budget plus ANSWER_ROOM stays within 32000 output tokens, the
# smallest limit of a model that thinks (Claude Opus 4 / 4.1), so a max_tokens grown for thinking
# is never refused; Bedrock's former 24000 + 8000 met that bound only exactly.
THINKING_BUDGETS: Mapping[str, int] = MappingProxyType(
    {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 24576})
# The effort sent with adaptive thinking (`output_config.effort` / `outputConfig.effort`).
ADAPTIVE_EFFORT: Mapping[str, str] = MappingProxyType(
    {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"})
MIN_BUDGET = 1024  # Claude's minimum budget_tokens
# Room for the visible answer on top of the budget when max_tokens has to grow for thinking
# (Claude requires budget_tokens < max_tokens).
ANSWER_ROOM = 4096
MAX_BREAKPOINTS = 4  # cache breakpoints (cache_control / cachePoint) Claude accepts in one request

# Claude has no JSON mode: json_object is asked for with this system instruction.
JSON_OBJECT_NOTE = "Respond with a single valid JSON object and nothing else."
# Description of a tool the history used but the request does not declare: Claude rejects tool
# calls and results in a request without tools, so those tools are declared with this note.
PAST_TOOL_NOTE = "A tool used earlier in this conversation; it is not available now."
# Text of the user turn put first when a conversation starts with the assistant (Claude requires
# a user turn first).
OPENING_USER_TEXT = "(continue)"


@dataclass(frozen=True, slots=True)
class Thinking:
    """Extended thinking as it is sent: budgeted (`budget`) or adaptive (`effort`)."""

    budget: int | None  # budget_tokens; None for adaptive thinking
    effort: str | None  # the adaptive effort; None for budgeted thinking
    max_tokens: int | None  # the max_tokens to send with it (None: the request sets none)

    def config(self) -> dict[str, Any]:
        """The `thinking` object, the same on both wires."""
        if self.budget is None:
            return {"type": "adaptive"}
        return {"type": "enabled", "budget_tokens": self.budget}


def thinking(effort: str | None, *, adaptive: bool, budgets: Any, max_tokens: int | None, explicit: bool,
             forced_tool: bool, tool_turn_without_thinking: bool) -> Thinking | None:
    """The thinking to send for `reasoning.effort`, or None to send none.

    `max_tokens` is what the request would send otherwise and `explicit` whether the client set it
    (`max_output_tokens`, which includes reasoning in the Responses API). Thinking is left off when
    the effort is none, when a tool call is forced (`forced_tool`: Claude rejects forced tool use
    with thinking, whether the client forced it or Sluice forces its structured-output tool; the
    format is the client's contract, reasoning only a wish), and when the open tool-use turn came
    back without its signed thinking block (`tool_turn_without_thinking`: Claude rejects such a
    turn while thinking).
    """
    if effort is None or effort == "none" or forced_tool or tool_turn_without_thinking:
        return None
    if adaptive:
        return Thinking(None, ADAPTIVE_EFFORT.get(effort, "medium"), max_tokens)
    override = budgets.get(effort) if isinstance(budgets, dict) else None
    budget = int(override or THINKING_BUDGETS.get(effort, THINKING_BUDGETS["medium"]))
    if max_tokens is not None and budget < max_tokens:
        return Thinking(budget, None, max_tokens)
    if max_tokens is None or not explicit:
        return Thinking(budget, None, budget + ANSWER_ROOM)
    # The client's cap includes reasoning: the budget shrinks under it, or thinking is left off
    # when there is no room for Claude's minimum budget and an answer.
    if max_tokens <= MIN_BUDGET:
        return None
    return Thinking(max(MIN_BUDGET, max_tokens // 2), None, max_tokens)


def sampling(temperature: float | None, top_p: float | None, *, thinking: bool) -> tuple[float | None, float | None]:
    """(temperature, top_p) to send.

    Neither while thinking (Claude rejects sampling parameters with thinking); temperature clamped
    to Claude's 0..1; top_p only without temperature (newer models reject both together).
    """
    if thinking:
        return None, None
    if temperature is not None:
        return min(temperature, 1.0), None
    return None, top_p


def kept_breakpoints(count: int, limit: int = MAX_BREAKPOINTS) -> set[int]:
    """Positions (in prompt order) of the cache breakpoints to keep out of `count`.

    Over the limit, the first (the stable prefix: tools or system) and the latest ones (the longest
    prefixes) are kept; those in between are dropped.
    """
    if count <= limit:
        return set(range(count))
    return {0, *range(count - (limit - 1), count)}


def one_hour_prefix(ttls: Sequence[str | None]) -> int:
    """How many leading breakpoints (in prompt order, by TTL) must become 1h.

    Claude requires longer TTLs first, and a 1h breakpoint asks for its whole prefix to live an
    hour: every breakpoint before the last 1h one is upgraded. 0 when there is no 1h one.
    """
    return max((i for i, ttl in enumerate(ttls) if ttl == "1h"), default=0)


# Model ids of the Claude 1/2/3 generations ("claude-3-7-sonnet-...", "claude-instant-1.2").
_LEGACY_NAMING = re.compile(r"claude-(?:instant|\d)")
# Newer ids name the family first: "claude-sonnet-4-5", "claude-opus-4-1-20250805",
# "claude-sonnet-4-20250514" (4.0: the date is no minor version), "claude-opus-4@20250514".
_VERSIONED = re.compile(r"claude-[a-z]+-(\d+)(?:[-.](\d)(?!\d))?")


def takes_strict_tools(model: str) -> bool:
    """Whether this Claude model accepts `strict` on a tool (structured outputs' strict tool use).

    Claude Opus 4.1, 4.5 and every later model do; Claude 3.x and Claude Sonnet 4 / Opus 4 (4.0)
    refuse the whole request ("'claude-sonnet-4-20250514' does not support strict tools"). Ids
    Sluice cannot place (newer families, ARNs) are taken to support it.
    """
    name = model.lower()
    if _LEGACY_NAMING.search(name):
        return False
    found = _VERSIONED.search(name)
    if found is None:
        return True
    return (int(found.group(1)), int(found.group(2) or 0)) >= (4, 1)


def strict_tool(strict: object, model: str, option: object = None) -> bool:
    """Whether a function tool goes to Claude with `strict: true`.

    Only a tool the client marked `strict: true` does, and only on a model that takes it. The
    Responses API treats an omitted `strict` as strict (OpenAI then rewrites the schema: every
    property required, no additional properties), but on Claude strict mode is opt-in, refused by
    older models and capped per request (strict tools and their optional parameters are limited),
    so an omitted `strict` stays Claude's default, not strict. The provider option `strict_tools`:
    false never sends it; true sends an explicit `strict: true` whatever the model.
    """
    if strict is not True or option is False:
        return False
    return option is True or takes_strict_tools(model)
