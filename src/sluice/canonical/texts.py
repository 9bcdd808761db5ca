"""Every text of a request, rewritten through one function: what a guardrail needs to see and change.

`map_texts` covers what a person or a model wrote: the instructions; message text, refusals and
reasoning text; function-call arguments and outputs; custom tool input and output; tool
descriptions and the descriptions inside their parameter schemas. Identifiers (ids, call ids,
tool names), opaque state (`encrypted_content`) and binary parts (images, files) are left alone.
The request is not modified: a new one is returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sluice.canonical.request import TEXT_PART_FIELDS, CanonicalRequest

TextMap = Callable[[str], str]



def part_text(part: dict[str, Any]) -> str | None:
    """The text a content part carries, by its type (validated at the edge); None for non-text parts."""
    key = TEXT_PART_FIELDS.get(part.get("type"))  # type: ignore[arg-type]
    value = part.get(key) if key is not None else None
    return value if isinstance(value, str) else None


def map_texts(request: CanonicalRequest, fn: TextMap) -> CanonicalRequest:
    """A copy of `request` with every text passed through `fn`."""
    req = request.req
    fields: dict[str, Any] = {"items": [_item(item, fn) for item in request.items]}
    if req.instructions is not None:
        fields["instructions"] = fn(req.instructions)
    if req.tools:
        fields["tools"] = [_tool(tool, fn) for tool in req.tools]
    return request.replace(**fields)


def _parts(parts: list[Any], fn: TextMap) -> list[Any]:
    out = []
    for part in parts:
        key = TEXT_PART_FIELDS.get(part.get("type")) if isinstance(part, dict) else None
        if key is not None and isinstance(part.get(key), str):
            part = {**part, key: fn(part[key])}
        out.append(part)
    return out


def _item(item: dict[str, Any], fn: TextMap) -> dict[str, Any]:
    kind = item.get("type")
    if kind == "message":
        return {**item, "content": _parts(item["content"], fn)}
    if kind == "function_call":
        return {**item, "arguments": fn(item["arguments"])}
    if kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output")
        if isinstance(output, str):
            return {**item, "output": fn(output)}
        if isinstance(output, list):
            return {**item, "output": _parts(output, fn)}
        return item
    if kind == "custom_tool_call" and isinstance(item.get("input"), str):
        return {**item, "input": fn(item["input"])}
    if kind == "reasoning":
        changed = dict(item)
        for key in ("summary", "content"):
            if isinstance(item.get(key), list):
                changed[key] = _parts(item[key], fn)
        return changed
    return item


def _tool(tool: dict[str, Any], fn: TextMap) -> dict[str, Any]:
    changed = dict(tool)
    if isinstance(tool.get("description"), str):
        changed["description"] = fn(tool["description"])
    if isinstance(tool.get("parameters"), dict):
        changed["parameters"] = _schema(tool["parameters"], fn)
    return changed


def _schema(node: Any, fn: TextMap) -> Any:
    """Descriptions (and titles) anywhere in a JSON schema; property names and types stay."""
    if isinstance(node, list):
        return [_schema(value, fn) for value in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("description", "title") and isinstance(value, str):
            out[key] = fn(value)
        elif key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, dict):
            out[key] = {name: _schema(sub, fn) for name, sub in value.items()}  # keys are names, not text
        else:
            out[key] = _schema(value, fn)
    return out
