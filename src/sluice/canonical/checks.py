"""Checks of the request's free-form objects: tools, tool_choice, JSON schemas, cache_control.

These objects stay plain dicts (OpenAI-native fields pass through untouched), but every field an
adapter reads is checked here, at the edge, with its type: a malformed value is a 400 naming the
field, never a crash while a translator builds an upstream body.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from sluice.errors import InvalidRequest


class _CacheControl(msgspec.Struct):
    type: Literal["ephemeral"] = "ephemeral"
    ttl: Literal["5m", "1h"] | None = None


class _FunctionTool(msgspec.Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    cache_control: _CacheControl | None = None


class _Filters(msgspec.Struct):
    allowed_domains: list[str] | None = None


class _Location(msgspec.Struct):
    type: str | None = None
    city: str | None = None
    country: str | None = None
    region: str | None = None
    timezone: str | None = None


class _WebSearchTool(msgspec.Struct):
    filters: _Filters | None = None
    user_location: _Location | None = None
    search_context_size: Literal["low", "medium", "high"] | None = None
    cache_control: _CacheControl | None = None


class _CustomTool(msgspec.Struct):
    name: str
    description: str | None = None
    format: dict[str, Any] | None = None
    cache_control: _CacheControl | None = None


class _NamespaceTool(msgspec.Struct):
    name: Annotated[str, Meta(min_length=1)]
    tools: Annotated[list[dict[str, Any]], Meta(min_length=1)]
    description: str | None = None
    cache_control: _CacheControl | None = None


class _CodeInterpreterTool(msgspec.Struct):
    container: str | dict[str, Any] | None = None
    cache_control: _CacheControl | None = None


class _ToolRef(msgspec.Struct):
    type: str
    name: str | None = None


class _AllowedTools(msgspec.Struct):
    mode: Literal["auto", "required"]
    tools: list[_ToolRef]


def _tool_shape(kind: str) -> type[msgspec.Struct] | None:
    if kind == "function":
        return _FunctionTool
    if kind.startswith("web_search"):
        return _WebSearchTool
    if kind == "custom":
        return _CustomTool
    if kind == "namespace":
        return _NamespaceTool
    if kind == "code_interpreter":
        return _CodeInterpreterTool
    return None  # other hosted tools: only OpenAI carries them, untouched


def check_tools(tools: list[dict[str, Any]]) -> None:
    for i, tool in enumerate(tools):
        _check_tool(tool, f"tools[{i}]")
        if tool["type"] == "namespace":
            for j, inner in enumerate(tool["tools"]):
                where = f"tools[{i}].tools[{j}]"
                if not isinstance(inner, dict) or inner.get("type") not in ("function", "custom"):
                    raise _invalid(f"{where}.type", "a namespace holds function and custom tools")
                _check_tool(inner, where)


def _check_tool(tool: dict[str, Any], where: str) -> None:
    shape = _tool_shape(tool["type"])
    if shape is not None:
        _convert(tool, shape, where)
    if "cache_control" in tool:  # a breakpoint may stand on any tool
        check_cache_control(tool["cache_control"], f"{where}.cache_control")
    parameters = tool.get("parameters")
    if isinstance(parameters, dict):
        check_schema(parameters, f"{where}.parameters")


def check_tool_choice(choice: dict[str, Any]) -> None:
    if choice.get("type") == "allowed_tools":
        _convert(choice, _AllowedTools, "tool_choice")


def check_cache_control(value: Any, where: str) -> None:
    _convert(value, _CacheControl, where)


# JSON Schema keywords whose value is a map of names to schemas, one schema, or a list of schemas.
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
               "unevaluatedProperties", "unevaluatedItems", "additionalItems")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
MAX_SCHEMA_DEPTH = 64


def check_schema(schema: Any, where: str, depth: int = 0) -> None:
    """The structure translators walk: schemas are objects (or booleans), keyword values typed."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise _invalid(where, "expected a JSON schema (an object)")
    if depth > MAX_SCHEMA_DEPTH:
        raise _invalid(where, f"the schema is nested deeper than {MAX_SCHEMA_DEPTH} levels")
    kind = schema.get("type")
    if kind is not None and not (isinstance(kind, str) or (isinstance(kind, list)
                                                            and all(isinstance(k, str) for k in kind))):
        raise _invalid(f"{where}.type", "expected a string or a list of strings")
    required = schema.get("required")
    if required is not None and not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
        raise _invalid(f"{where}.required", "expected a list of property names")
    for key in ("enum", "examples"):
        if key in schema and not isinstance(schema[key], list):
            raise _invalid(f"{where}.{key}", "expected a list")
    for key in ("description", "title", "format", "pattern", "$ref"):
        if key in schema and not isinstance(schema[key], str):
            raise _invalid(f"{where}.{key}", "expected a string")
    for key in _SCHEMA_MAPS:
        if key in schema:
            value = schema[key]
            if not isinstance(value, dict):
                raise _invalid(f"{where}.{key}", "expected an object of schemas")
            for name, sub in value.items():
                check_schema(sub, f"{where}.{key}.{name}", depth + 1)
    for key in _SCHEMA_ONE:
        if key in schema:
            value = schema[key]
            if isinstance(value, list) and key in ("items", "additionalItems"):
                for j, sub in enumerate(value):
                    check_schema(sub, f"{where}.{key}[{j}]", depth + 1)
            else:
                check_schema(value, f"{where}.{key}", depth + 1)
    for key in _SCHEMA_LISTS:
        if key in schema:
            value = schema[key]
            if not isinstance(value, list):
                raise _invalid(f"{where}.{key}", "expected a list of schemas")
            for j, sub in enumerate(value):
                check_schema(sub, f"{where}.{key}[{j}]", depth + 1)


def _convert(value: Any, shape: type[msgspec.Struct], where: str) -> None:
    try:
        msgspec.convert(value, shape)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at ")
        param = where + path.strip("`").removeprefix("$").replace("[...]", "")
        if message.startswith("Object missing required field"):
            param = f"{param}.{message.split('`')[1]}"
            raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                                 code="missing_required_parameter") from None
        raise InvalidRequest(f"Invalid value for '{param}': {message[0].lower()}{message[1:]}.", param=param,
                             code="invalid_value") from None


def _invalid(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid value for '{param}': {what}.", param=param, code="invalid_value")
