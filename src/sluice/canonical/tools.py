"""Tool kinds other wire protocols lack, flattened into function tools and restored in the answer.

OpenAI's Responses API groups tools under a `namespace` and has `custom` (freeform) tools whose
call carries one string `input`. Anthropic, Gemini, Bedrock and most Chat Completions servers
know only function tools, under names matching `^[a-zA-Z0-9_-]{1,64}$`. `flatten` rewrites a
canonical request into one they can carry, still in canonical shapes:

- a namespaced tool becomes a function named `<namespace>__<name>`; a custom tool becomes a
  function taking one string parameter `input` (its grammar, if any, in the description), or
  stays a custom tool where the protocol has them (`native_custom`);
- a name that is not a valid wire name (too long, other characters, or taken) becomes its first
  characters, `_`, and 10 hex digits of a SHA-256 of namespace and name: deterministic, so the
  same tools get the same names on every turn (prompt caches stay warm), and unique;
- the history follows: a namespaced `function_call` is renamed, a `custom_tool_call` becomes a
  `function_call` with arguments `{"input": ...}`, a `custom_tool_call_output` a
  `function_call_output`;
- `tool_choice` names the wire names;
- a hosted tool the protocol has no equivalent for (`carries` says False) is dropped and named
  in `Flattened.dropped`, or refused with a 400 naming it when the provider is configured so.

The returned `ToolMap` takes a wire name back to what the client declared: the event builder
(`canonical/stream.py`) uses it to answer with `function_call` items carrying `namespace`, and
`custom_tool_call` items carrying `input`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sluice.canonical.request import CanonicalRequest
from sluice.errors import InvalidRequest

WIRE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_WIRE_NAME = 64
SEPARATOR = "__"
_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_HASH_DIGITS = 10
# The tool types that are not hosted tools: the client runs them.
CLIENT_TOOLS = frozenset({"function", "custom", "namespace"})

_encode = msgspec.json.encode


@dataclass(frozen=True, slots=True)
class ToolTarget:
    """What a wire name stands for: the client's tool name, its namespace, and whether it is custom."""

    name: str
    namespace: str | None = None
    custom: bool = False


class ToolMap:
    """Wire names <-> the client's tools. Only names that need restoring are kept for `lookup`."""

    __slots__ = ("_restore", "_taken", "_wire")

    def __init__(self) -> None:
        self._wire: dict[tuple[str | None, str], str] = {}
        self._taken: set[str] = set()
        self._restore: dict[str, ToolTarget] = {}

    def __bool__(self) -> bool:
        return bool(self._restore)

    def lookup(self, wire: str) -> ToolTarget | None:
        """The client's tool behind a wire name; None when the name is the client's own function."""
        return self._restore.get(wire)

    def wire(self, name: str, namespace: str | None = None, *, custom: bool = False) -> str:
        """The wire name of a tool, assigned on first use (valid, unique, deterministic)."""
        key = (namespace, name)
        found = self._wire.get(key)
        if found is not None:
            return found
        plain = f"{namespace}{SEPARATOR}{name}" if namespace else name
        wire = plain if WIRE_NAME.match(plain) and plain not in self._taken else _hashed(plain, namespace, name, 0)
        salt = 0
        while wire in self._taken:  # a hashed name colliding: astronomically rare, still handled
            salt += 1
            wire = _hashed(plain, namespace, name, salt)
        self._wire[key] = wire
        self._taken.add(wire)
        if wire != name or namespace is not None or custom:
            self._restore[wire] = ToolTarget(name, namespace, custom)
        return wire


def _hashed(plain: str, namespace: str | None, name: str, salt: int) -> str:
    digest = hashlib.sha256(f"{namespace or ''}\0{name}\0{salt or ''}".encode()).hexdigest()[:_HASH_DIGITS]
    head = _BAD_CHARS.sub("_", plain)[: MAX_WIRE_NAME - _HASH_DIGITS - 1]
    return f"{head}_{digest}"


@dataclass(slots=True)
class Flattened:
    """A request a protocol without namespaces / custom tools can carry, and how to restore the answer."""

    request: CanonicalRequest
    tools: ToolMap = field(default_factory=ToolMap)
    dropped: list[str] = field(default_factory=list)  # hosted tool types left out, in order, once each


def hosted_tools_not_carried(parsed: CanonicalRequest, carries: Callable[[dict[str, Any]], bool]) -> list[str]:
    """The hosted tool types of a request that a protocol has no equivalent for (once each, in order)."""
    dropped: list[str] = []
    for tool in parsed.req.tools or ():
        kind = tool["type"]
        if kind not in CLIENT_TOOLS and not carries(tool) and kind not in dropped:
            dropped.append(kind)
    return dropped


def flatten(parsed: CanonicalRequest, *, carries: Callable[[dict[str, Any]], bool], native_custom: bool = False,
            refuse: bool = False, provider: str = "") -> Flattened:
    """`parsed` with only function tools (plus custom ones if `native_custom`) and the hosted tools
    `carries` accepts; `refuse` makes a hosted tool without equivalent a 400 instead of a drop."""
    req = parsed.req
    tools_in = req.tools or []
    needs = any(tool["type"] not in ("function",) for tool in tools_in) or any(
        not WIRE_NAME.match(tool["name"]) for tool in tools_in if tool["type"] == "function") or any(
        item["type"] in ("custom_tool_call", "custom_tool_call_output") or
        (item["type"] == "function_call" and ("namespace" in item or not WIRE_NAME.match(item["name"])))
        for item in parsed.items)
    if not needs:
        return Flattened(parsed)
    out = Flattened(parsed)
    names = out.tools
    # The client's own valid function names keep their names: they are claimed first.
    for tool in tools_in:
        if tool["type"] in ("function", "custom") and WIRE_NAME.match(tool["name"]):
            names.wire(tool["name"], custom=tool["type"] == "custom" and not native_custom)
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(tools_in):
        kind = tool["type"]
        if kind == "function":
            tools.append(_function(tool, names.wire(tool["name"])))
        elif kind == "custom":
            tools.append(_custom(tool, names.wire(tool["name"], custom=not native_custom), native_custom))
        elif kind == "namespace":
            tools += _namespace(tool, names, native_custom)
        elif carries(tool):
            tools.append(tool)
        elif refuse:
            raise InvalidRequest(f"The '{kind}' tool is not supported by provider '{provider}'.",
                                 param=f"tools[{i}].type", code="unsupported_parameter")
        elif kind not in out.dropped:
            out.dropped.append(kind)
    fields: dict[str, Any] = {"items": [_item(item, names, native_custom) for item in parsed.items]}
    if req.tools is not None:
        fields["tools"] = tools
    if isinstance(req.tool_choice, dict):
        fields["tool_choice"] = _tool_choice(req.tool_choice, names, native_custom, out.dropped, tools_in, provider)
    out.request = parsed.replace(**fields)
    return out


# --- tools ---------------------------------------------------------------------------------------


def _function(tool: dict[str, Any], wire: str, note: str | None = None) -> dict[str, Any]:
    converted = {**tool, "type": "function", "name": wire}
    if note:
        converted["description"] = f"{tool['description']}\n\n{note}" if tool.get("description") else note
    return converted


def _custom(tool: dict[str, Any], wire: str, native: bool, note: str | None = None) -> dict[str, Any]:
    if native:
        converted = {**tool, "name": wire}
        if note:
            converted["description"] = f"{tool['description']}\n\n{note}" if tool.get("description") else note
        return converted
    parts = [tool["description"]] if tool.get("description") else []
    fmt = tool.get("format") or {}
    if fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        syntax = f"{fmt['syntax']} " if isinstance(fmt.get("syntax"), str) else ""
        parts.append(f"Pass the tool's whole input as the string parameter `input`; it must follow this {syntax}"
                     f"grammar:\n{fmt['definition']}")
    else:
        parts.append("Pass the tool's whole input, free-form text, as the string parameter `input`.")
    if note:
        parts.append(note)
    converted: dict[str, Any] = {
        "type": "function", "name": wire, "description": "\n\n".join(parts),
        "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"],
                       "additionalProperties": False},
    }
    if tool.get("cache_control"):
        converted["cache_control"] = tool["cache_control"]
    return converted


def _namespace(tool: dict[str, Any], names: ToolMap, native_custom: bool) -> list[dict[str, Any]]:
    namespace = tool["name"]
    note = f"(Tool of the `{namespace}` group: {tool['description']})" if tool.get("description") else None
    converted = []
    for inner in tool["tools"]:
        if inner["type"] == "custom":
            wire = names.wire(inner["name"], namespace, custom=not native_custom)
            converted.append(_custom(inner, wire, native_custom, note))
        else:
            converted.append(_function(inner, names.wire(inner["name"], namespace), note))
    if tool.get("cache_control") and converted:
        # The group's breakpoint ends the group: it marks its last tool.
        converted[-1] = {**converted[-1], "cache_control": tool["cache_control"]}
    return converted


# --- history -------------------------------------------------------------------------------------


def _item(item: dict[str, Any], names: ToolMap, native_custom: bool) -> dict[str, Any]:
    kind = item["type"]
    if kind == "function_call":
        namespace = item.get("namespace")
        wire = names.wire(item["name"], namespace)
        if wire == item["name"] and "namespace" not in item:
            return item
        converted = {key: value for key, value in item.items() if key != "namespace"}
        converted["name"] = wire
        return converted
    if kind == "custom_tool_call":
        wire = names.wire(item["name"], item.get("namespace"), custom=not native_custom)
        if native_custom:
            converted = {key: value for key, value in item.items() if key != "namespace"}
            converted["name"] = wire
            return converted
        call = {"type": "function_call", "call_id": item["call_id"], "name": wire,
                "arguments": _encode({"input": item["input"]}).decode()}
        return _carry(item, call, ("id", "status", "cache_control"))
    if kind == "custom_tool_call_output" and not native_custom:
        output = {"type": "function_call_output", "call_id": item["call_id"], "output": item["output"]}
        return _carry(item, output, ("id", "status", "cache_control", "is_error"))
    return item


def _carry(source: dict[str, Any], target: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    for key in keys:
        if key in source:
            target[key] = source[key]
    return target


# --- tool_choice ---------------------------------------------------------------------------------


def _tool_choice(choice: dict[str, Any], names: ToolMap, native_custom: bool, dropped: list[str],
                 tools: list[dict[str, Any]], provider: str) -> dict[str, Any]:
    kind = choice["type"]
    if kind == "function":
        return {**{k: v for k, v in choice.items() if k != "namespace"},
                "name": names.wire(choice["name"], choice.get("namespace"))}
    if kind == "custom":
        wire = names.wire(choice["name"], choice.get("namespace"), custom=not native_custom)
        return {"type": "custom", "name": wire} if native_custom else {"type": "function", "name": wire}
    if kind == "allowed_tools":
        refs: list[dict[str, Any]] = []
        for ref in choice.get("tools") or ():
            refs += _allowed(ref, names, native_custom, dropped, tools)
        return {**choice, "tools": refs}
    if kind in dropped:
        raise InvalidRequest(f"tool_choice forces the '{kind}' tool, which is not supported by provider "
                             f"'{provider}'.", param="tool_choice", code="unsupported_parameter")
    return choice


def _allowed(ref: dict[str, Any], names: ToolMap, native_custom: bool, dropped: list[str],
             tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kind = ref.get("type")
    name = ref.get("name")
    if kind == "namespace" and isinstance(name, str):
        # Every tool of the group.
        group = next((t for t in tools if t["type"] == "namespace" and t["name"] == name), None)
        inner = group["tools"] if group else []
        return [_allowed({"type": t["type"], "name": t["name"], "namespace": name}, names, native_custom, dropped,
                         tools)[0] for t in inner]
    if kind == "function" and isinstance(name, str):
        return [{"type": "function", "name": names.wire(name, ref.get("namespace"))}]
    if kind == "custom" and isinstance(name, str):
        wire = names.wire(name, ref.get("namespace"), custom=not native_custom)
        return [{"type": "custom" if native_custom else "function", "name": wire}]
    if kind in dropped:
        return []
    return [ref]
