"""Responses request -> Anthropic Messages request body (`POST /v1/messages`).

Anthropic's conversation shape is stricter than the Responses input list: one top-level `system`,
turns that alternate user/assistant and start with a user turn, `tool_result` blocks first in the
user turn that follows the assistant's `tool_use`, at most four cache breakpoints. `build_body`
folds the item list into that shape in one pass and returns a `Plan` that tells the response side
what the request asked for (a forced JSON tool, sealed reasoning wanted, ...).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from sluice.canonical.reasoning import unseal
from sluice.canonical.request import CanonicalRequest
from sluice.canonical.tools import ToolMap
from sluice.errors import InvalidRequest
from sluice.providers import claude_policy
from sluice.providers.claude_policy import JSON_OBJECT_NOTE, OPENING_USER_TEXT, PAST_TOOL_NOTE
from sluice.providers.claude_schema import strict_schema

PROTOCOL = "anthropic"  # tag of the reasoning state sealed into encrypted_content

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")
# Items Sluice itself returns for Anthropic server tools; their state cannot be replayed, so they are dropped.
_DROPPED_ITEMS = frozenset({"web_search_call", "mcp_call", "code_interpreter_call"})
SUPPORTED_ITEMS = frozenset({"message", "function_call", "function_call_output", "reasoning"}) | _DROPPED_ITEMS
HOSTED_WEB_SEARCH = frozenset({"web_search", "web_search_preview", "web_search_2025_08_26",
                               "web_search_preview_2025_03_11"})
# Anthropic's code execution server tool stands in for OpenAI's code_interpreter (option
# `code_execution_tool` picks another version, e.g. code_execution_20260120).
CODE_EXECUTION_TOOL = "code_execution_20250825"

_MAX_USER_ID = 512  # Anthropic's limit on metadata.user_id

_decode = msgspec.json.decode


@dataclass(slots=True)
class Plan:
    """What the response side needs to know about the request that was sent."""

    json_tool: str | None = None  # name of the forced tool standing in for text.format json_schema
    json_wrapped: bool = False  # the schema was not an object: the tool input is {"value": ...}
    encrypted: bool = False  # the client asked for reasoning.encrypted_content
    sources: bool = False  # the client asked for web_search_call.action.sources
    summary: bool = False  # the client asked for reasoning.summary: thinking text is shown as summary_text
    tools: ToolMap | None = None  # wire names of flattened namespace / custom tools


def default_max_tokens(model: str) -> int:
    """`max_tokens` is required by Anthropic; the default is what the model family can produce."""
    name = model.lower()
    if "claude-3-5" in name or "claude-3.5" in name:
        return 8192
    if any(old in name for old in ("claude-3-haiku", "claude-3-opus", "claude-3-sonnet", "claude-2", "claude-instant")):
        return 4096
    return 32000


def build_body(parsed: CanonicalRequest, model: str, stream: bool,
               options: dict[str, Any]) -> tuple[dict[str, Any], Plan]:
    req = parsed.req
    reasoning = req.reasoning
    plan = Plan(encrypted=parsed.wants("reasoning.encrypted_content"),
                sources=parsed.wants("web_search_call.action.sources"),
                # As OpenAI does: a summary only when one is asked for (Claude's thinking text is one).
                summary=reasoning is not None and (reasoning.summary or reasoning.generate_summary) is not None)
    marks = _Marks()
    body: dict[str, Any] = {"model": model}
    tools, tool_choice = _tools(parsed, marks, options, plan)
    _strict_tools(tools, req.tools, model, options)
    system, messages = _conversation(parsed, marks)
    if not tools:
        past = _past_tools(messages)
        if past:
            tools, tool_choice = past, {"type": "none"}
    fmt = req.text.format if req.text is not None else None
    if fmt and fmt.get("type") == "json_object":
        # Anthropic has no JSON mode; an instruction is the closest it gets.
        system.append({"type": "text", "text": JSON_OBJECT_NOTE})
    if system:
        body["system"] = system
    body["messages"] = messages
    max_tokens = req.max_output_tokens or options.get("max_tokens") or default_max_tokens(model)
    thinking = _thinking(parsed, options, tool_choice, messages, max_tokens)
    body["max_tokens"] = thinking.max_tokens if thinking is not None else max_tokens
    if thinking is not None:
        body["thinking"] = thinking.config()
        if thinking.effort is not None:
            body["output_config"] = {"effort": thinking.effort}
    temperature, top_p = claude_policy.sampling(req.temperature, req.top_p, thinking=thinking is not None)
    if temperature is not None:
        body["temperature"] = temperature
    if top_p is not None:
        body["top_p"] = top_p
    if tools:
        body["tools"] = tools
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
    if fmt and fmt.get("type") == "json_schema" and plan.json_tool is None:
        body.setdefault("output_config", {})["format"] = {"type": "json_schema", "schema": strict_schema(fmt["schema"])}
    if req.cache_control is not None:
        body["cache_control"] = _cache(msgspec.to_builtins(req.cache_control))
    marks.enforce(body.get("cache_control"))
    if req.user:
        body["metadata"] = {"user_id": _user_id(req.user)}
    if stream:
        body["stream"] = True
    extra = options.get("extra_body")
    if isinstance(extra, dict):
        body.update(extra)
    return body, plan


def _user_id(user: str) -> str:
    """`user` as Anthropic's `metadata.user_id` (an opaque id of at most 512 characters)."""
    return user if len(user) <= _MAX_USER_ID else hashlib.sha256(user.encode()).hexdigest()


# --- conversation --------------------------------------------------------------------------------


def _conversation(parsed: CanonicalRequest, marks: _Marks) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating messages) from instructions and the input items."""
    system: list[dict[str, Any]] = []
    if parsed.req.instructions:
        system.append({"type": "text", "text": parsed.req.instructions})
    turns = _Turns()
    for i, item in enumerate(parsed.items):
        kind = item["type"]
        if kind == "message":
            role = item["role"]
            if role in ("system", "developer"):
                # Anthropic has one system prompt: system/developer messages join it, in order.
                blocks = _system_blocks(item["content"])
                system.extend(blocks)
                marks.system(blocks, item.get("cache_control"))
            else:
                blocks = _parts(item["content"], f"input[{i}].content", role == "assistant")
                turns.add(role, blocks)
                marks.message(blocks, item.get("cache_control"))
        elif kind == "function_call":
            block = {"type": "tool_use", "id": _tool_id(item["call_id"]), "name": item["name"],
                     "input": _arguments(item["arguments"], f"input[{i}].arguments")}
            turns.add("assistant", [block])
            marks.message([block], item.get("cache_control"))
        elif kind == "function_call_output":
            block = _tool_result(item, f"input[{i}].output")
            turns.add_result(block)
            marks.message([block], item.get("cache_control"))
        elif kind == "reasoning":
            block = _thinking_block(item)
            if block is not None:
                turns.add("assistant", [block])
        # web_search_call / mcp_call: Anthropic's server-tool state cannot be rebuilt; the text stays.
    return system, turns.messages()


def _system_blocks(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A system/developer message's text parts as system text blocks (part-level cache_control kept)."""
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if part.get("type") in ("input_text", "output_text") and part.get("text"):
            block: dict[str, Any] = {"type": "text", "text": part["text"]}
            if part.get("cache_control"):
                block["cache_control"] = _cache(part["cache_control"])
            blocks.append(block)
    return blocks


class _Turns:
    """Alternating turns; a user turn keeps its tool_result blocks first, as Anthropic requires."""

    __slots__ = ("_turns",)

    def __init__(self) -> None:
        # [role, results, other blocks]
        self._turns: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = []

    def _turn(self, role: str) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
        if not self._turns or self._turns[-1][0] != role:
            self._turns.append((role, [], []))
        return self._turns[-1]

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if blocks:
            self._turn(role)[2].extend(blocks)

    def add_result(self, block: dict[str, Any]) -> None:
        self._turn("user")[1].append(block)

    def messages(self) -> list[dict[str, Any]]:
        messages = [{"role": role, "content": results + blocks if results else blocks}
                    for role, results, blocks in self._turns]
        if not messages or messages[0]["role"] != "user":
            messages.insert(0, {"role": "user", "content": [{"type": "text", "text": OPENING_USER_TEXT}]})
        return messages


def _parts(parts: list[dict[str, Any]], where: str, assistant: bool) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            if not part["text"]:
                continue  # Anthropic rejects empty text blocks
            block: dict[str, Any] = {"type": "text", "text": part["text"]}
        elif kind == "refusal":
            if not part["refusal"]:
                continue
            block = {"type": "text", "text": part["refusal"]}
        elif kind == "input_image" and not assistant:
            block = _image(part, f"{where}[{j}]")
        elif kind == "input_file" and not assistant:
            block = _document(part, f"{where}[{j}]")
        else:
            continue
        if part.get("cache_control"):
            block["cache_control"] = _cache(part["cache_control"])
        blocks.append(block)
    return blocks


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    url = part.get("image_url")
    if not url:
        raise InvalidRequest(f"An input_image by file_id is not supported by Anthropic; send image_url ({where}).",
                             param=f"{where}.file_id", code="unsupported_parameter")
    if url.startswith("data:"):
        media, data = _data_url(url, f"{where}.image_url")
        if media not in _IMAGE_TYPES:
            raise InvalidRequest(f"Invalid '{where}.image_url': Anthropic accepts image/jpeg, image/png, image/gif "
                                 f"and image/webp, got {media!r}.", param=f"{where}.image_url", code="invalid_value")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _document(part: dict[str, Any], where: str) -> dict[str, Any]:
    data, url, filename = part.get("file_data"), part.get("file_url"), part.get("filename")
    if data:
        if data.startswith("data:"):
            media, payload = _data_url(data, f"{where}.file_data")
        else:  # bare base64, as some clients send: OpenAI's file inputs are PDFs
            media, payload = "application/pdf", data
        if media == "application/pdf":
            source: dict[str, Any] = {"type": "base64", "media_type": "application/pdf", "data": payload}
        elif media.startswith("text/"):
            try:
                text = base64.b64decode(payload).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise InvalidRequest(f"Invalid '{where}.file_data': not base64-encoded UTF-8 text.",
                                     param=f"{where}.file_data", code="invalid_value") from None
            source = {"type": "text", "media_type": "text/plain", "data": text}
        else:
            raise InvalidRequest(f"Invalid '{where}.file_data': Anthropic accepts PDF and plain-text files, got "
                                 f"{media!r}.", param=f"{where}.file_data", code="invalid_value")
    elif url:
        source = {"type": "url", "url": url}
    else:
        raise InvalidRequest(f"An input_file by file_id is not supported by Anthropic; send file_data ({where}).",
                             param=f"{where}.file_id", code="unsupported_parameter")
    block: dict[str, Any] = {"type": "document", "source": source}
    if filename:
        block["title"] = filename[:500]
    return block


def _data_url(url: str, param: str) -> tuple[str, str]:
    header, comma, data = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise InvalidRequest(f"Invalid '{param}': expected a base64 data URL.", param=param, code="invalid_value")
    return header[5:-7].lower(), data


def _tool_id(call_id: str) -> str:
    # Anthropic's ids must match ^[a-zA-Z0-9_-]+$; ids minted elsewhere are mapped the same way
    # on the tool_use and the tool_result, so they still pair up.
    return call_id if _TOOL_ID.match(call_id) else (_TOOL_ID_BAD.sub("_", call_id) or "call")


def _arguments(arguments: str, param: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        value = _decode(arguments)
    except msgspec.DecodeError:
        raise InvalidRequest(f"Invalid '{param}': function call arguments must be a JSON object.", param=param,
                             code="invalid_value") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"Invalid '{param}': function call arguments must be a JSON object.", param=param,
                             code="invalid_value")
    return value


def _tool_result(item: dict[str, Any], where: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(item["call_id"])}
    output = item["output"]
    if isinstance(output, str):
        block["content"] = output
    else:
        content = _parts(output, where, False)
        if content:
            block["content"] = content
    if "is_error" in item:
        block["is_error"] = item["is_error"]
    return block


def _thinking_block(item: dict[str, Any]) -> dict[str, Any] | None:
    # Only state Sluice sealed for Anthropic goes back; anything else would fail verification.
    state = unseal(item.get("encrypted_content"), PROTOCOL)
    if state is None:
        return None
    if state.get("type") == "redacted_thinking" and isinstance(state.get("data"), str):
        return {"type": "redacted_thinking", "data": state["data"]}
    if state.get("type") == "thinking" and isinstance(state.get("signature"), str):
        return {"type": "thinking", "thinking": state.get("thinking") or "", "signature": state["signature"]}
    return None


# --- tools -----------------------------------------------------------------------------------------


def _tools(parsed: CanonicalRequest, marks: _Marks, options: dict[str, Any],
           plan: Plan) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    req = parsed.req
    choice = req.tool_choice
    allowed: set[str] | None = None
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        # Anthropic has no per-request subset of the tools: send only the allowed ones.
        allowed = {t.get("name") or t.get("type") for t in choice.get("tools") or ()}
    tools: list[dict[str, Any]] = []
    for tool in req.tools or ():
        kind = tool.get("type")
        if kind == "function":
            if allowed is not None and tool["name"] not in allowed:
                continue
            converted: dict[str, Any] = {"name": tool["name"]}
            if tool.get("description"):
                converted["description"] = tool["description"]
            converted["input_schema"] = tool.get("parameters") or {"type": "object", "properties": {}}
        elif kind in HOSTED_WEB_SEARCH:
            if allowed is not None and kind not in allowed and "web_search" not in allowed:
                continue
            converted = _web_search_tool(tool, req.max_tool_calls)
        elif kind == "code_interpreter":
            if allowed is not None and kind not in allowed:
                continue
            converted = {"type": options.get("code_execution_tool") or CODE_EXECUTION_TOOL, "name": "code_execution"}
        else:
            continue  # check() rejected it already
        if tool.get("cache_control"):
            converted["cache_control"] = _cache(tool["cache_control"])
            marks.tools.append(converted)
        tools.append(converted)
    tool_choice = _tool_choice(choice, req.parallel_tool_calls) if tools else None
    fmt = req.text.format if req.text is not None else None
    if fmt and fmt.get("type") == "json_schema" and options.get("structured_output") == "tool":
        tools.append(_json_tool(fmt, plan))
        tool_choice = _json_tool_choice(tool_choice, plan.json_tool or "", len(tools) > 1)
    return tools, tool_choice


def _strict_tools(tools: list[dict[str, Any]], client_tools: list[dict[str, Any]] | None, model: str,
                  options: dict[str, Any]) -> None:
    """Claude's strict tool use for the function tools the client declared `strict: true`.

    `claude_policy.strict_tool` decides (the model must take it); a strict tool's schema is
    narrowed to the subset strict tool use accepts, the same as structured outputs'.
    """
    names = {tool["name"] for tool in client_tools or () if tool.get("type") == "function"
             and claude_policy.strict_tool(tool.get("strict"), model, options.get("strict_tools"))}
    for tool in tools:
        if "input_schema" in tool and tool["name"] in names:  # function tools (server tools have none)
            tool["input_schema"] = strict_schema(tool["input_schema"])
            tool["strict"] = True


def _past_tools(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Declarations for the tools named in the history's tool_use blocks, in order of first use.

    Anthropic rejects tool_use / tool_result blocks in a request that defines no tools; when the
    client sent none (or allowed_tools filtered them all out) these stand in, with tool_choice none.
    """
    names = dict.fromkeys(block["name"] for message in messages for block in message["content"]
                          if block["type"] == "tool_use")
    return [{"name": name, "description": PAST_TOOL_NOTE, "input_schema": {"type": "object", "properties": {}}}
            for name in names]


def _web_search_tool(tool: dict[str, Any], max_uses: int | None) -> dict[str, Any]:
    converted: dict[str, Any] = {"type": "web_search_20250305", "name": "web_search"}
    domains = (tool.get("filters") or {}).get("allowed_domains")
    if domains:
        converted["allowed_domains"] = domains
    location = tool.get("user_location")
    if isinstance(location, dict):
        fields = {k: location[k] for k in ("city", "region", "country", "timezone") if location.get(k)}
        if fields:
            converted["user_location"] = {"type": "approximate", **fields}
    if max_uses:
        converted["max_uses"] = max_uses
    return converted


def _tool_choice(choice: str | dict[str, Any] | None, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        converted: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}  # takes no disable_parallel_tool_use
    elif choice == "required":
        converted = {"type": "any"}
    elif choice.get("type") == "function":  # type: ignore[union-attr]
        converted = {"type": "tool", "name": choice["name"]}  # type: ignore[index]
    elif choice.get("type") in HOSTED_WEB_SEARCH:  # type: ignore[union-attr]
        converted = {"type": "tool", "name": "web_search"}
    else:  # allowed_tools: the subset was applied to the tool list
        converted = {"type": "any" if choice.get("mode") == "required" else "auto"}  # type: ignore[union-attr]
    if parallel is False:
        converted["disable_parallel_tool_use"] = True
    elif choice is None and parallel is None:
        return None  # Anthropic's default is auto with parallel calls allowed
    return converted


def _json_tool(fmt: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """A tool whose input is the structured answer (providers that lack native structured output)."""
    schema = fmt["schema"]
    plan.json_tool = fmt["name"]
    if schema.get("type") != "object":
        # A tool's input must be an object: wrap the schema and unwrap the answer.
        plan.json_wrapped = True
        schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    tool: dict[str, Any] = {"name": fmt["name"], "input_schema": schema}
    tool["description"] = fmt.get("description") or "Respond with the final answer by calling this tool."
    return tool


def _json_tool_choice(choice: dict[str, Any] | None, name: str, has_functions: bool) -> dict[str, Any]:
    if not has_functions or (choice is not None and choice["type"] == "none"):
        return {"type": "tool", "name": name}
    if choice is not None and choice["type"] == "tool":
        return choice
    # The model answers through a function call or the JSON tool, never in free text.
    converted: dict[str, Any] = {"type": "any"}
    if choice is not None and choice.get("disable_parallel_tool_use"):
        converted["disable_parallel_tool_use"] = True
    return converted


# --- reasoning ------------------------------------------------------------------------------------


def _thinking(parsed: CanonicalRequest, options: dict[str, Any], tool_choice: dict[str, Any] | None,
              messages: list[dict[str, Any]], max_tokens: int) -> claude_policy.Thinking | None:
    reasoning = parsed.req.reasoning
    return claude_policy.thinking(
        reasoning.effort if reasoning is not None else None,
        adaptive=options.get("thinking") == "adaptive", budgets=options.get("thinking_budgets"),
        max_tokens=max_tokens, explicit=parsed.req.max_output_tokens is not None,
        forced_tool=tool_choice is not None and tool_choice["type"] in ("any", "tool"),
        tool_turn_without_thinking=_open_tool_turn_without_thinking(messages))


def _open_tool_turn_without_thinking(messages: list[dict[str, Any]]) -> bool:
    """The last assistant turn calls tools but does not start with its thinking block."""
    for message in reversed(messages):
        if message["role"] == "assistant":
            content = message["content"]
            uses_tools = any(block["type"] == "tool_use" for block in content)
            return uses_tools and content[0]["type"] not in ("thinking", "redacted_thinking")
    return False


# --- prompt caching -------------------------------------------------------------------------------


def _cache(value: dict[str, Any]) -> dict[str, Any]:
    # Only the fields Anthropic knows; ttl absent means 5m.
    cache: dict[str, Any] = {"type": "ephemeral"}
    if value.get("ttl") in ("5m", "1h"):
        cache["ttl"] = value["ttl"]
    return cache


class _Marks:
    """Blocks carrying cache_control, in prompt order (tools, system, messages)."""

    __slots__ = ("_messages", "_system", "tools")

    def __init__(self) -> None:
        self.tools: list[dict[str, Any]] = []
        self._system: list[dict[str, Any]] = []
        self._messages: list[dict[str, Any]] = []

    def system(self, blocks: list[dict[str, Any]], cache: dict[str, Any] | None) -> None:
        self._mark(self._system, blocks, cache)

    def message(self, blocks: list[dict[str, Any]], cache: dict[str, Any] | None) -> None:
        self._mark(self._messages, blocks, cache)

    @staticmethod
    def _mark(into: list[dict[str, Any]], blocks: list[dict[str, Any]], cache: dict[str, Any] | None) -> None:
        # A message's (or item's) cache_control marks its last block: the end of the cached prefix.
        if cache and blocks:
            blocks[-1]["cache_control"] = _cache(cache)
        for block in blocks:
            # Parts of a tool_result carry their own breakpoints; they count toward the limit too
            # and come before the tool_result block's own in prompt order.
            nested = block.get("content") if block["type"] == "tool_result" else None
            if isinstance(nested, list):
                into.extend(part for part in nested if "cache_control" in part)
            if "cache_control" in block:
                into.append(block)

    def enforce(self, top_level: dict[str, Any] | None) -> None:
        """Keep Claude's limits (`claude_policy`): at most 4 breakpoints, no 1h one after a 5m one.

        The request-level breakpoint (`top_level`) lands after every block, so it counts last.
        """
        marks = self.tools + self._system + self._messages
        limit = claude_policy.MAX_BREAKPOINTS - (1 if top_level is not None else 0)
        keep = claude_policy.kept_breakpoints(len(marks), limit)
        for i, block in enumerate(marks):
            if i not in keep:
                del block["cache_control"]
        marks = [block for block in marks if "cache_control" in block]
        ttls = [block["cache_control"].get("ttl") for block in marks]
        if top_level is not None:
            ttls.append(top_level.get("ttl"))
        for block in marks[:claude_policy.one_hour_prefix(ttls)]:
            block["cache_control"]["ttl"] = "1h"
