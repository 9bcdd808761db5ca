"""The JSON schema subset Claude's native structured output accepts, shared by the Claude adapters.

Anthropic's Messages API (`output_config.format`) and Bedrock Converse for Claude models
(`outputConfig.textFormat`) enforce the same grammar-constrained subset of JSON Schema, so both
adapters narrow a client's `text.format` schema with `strict_schema` before sending it.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.encode

# The string formats Claude's structured output supports; other formats move into the description.
_STRING_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6",
                             "uuid"})


def strict_schema(schema: Any) -> Any:
    """A JSON schema in the subset Claude's structured output accepts.

    Kept: `type`, `enum`, `const`, `description`, `title`; `properties` and `required` on objects;
    `items` and `minItems` of 0 or 1 on arrays; `format` on strings when it is one of date-time,
    time, date, duration, email, hostname, uri, ipv4, ipv6, uuid; `anyOf` and `allOf` (`oneOf`
    becomes `anyOf`); local `$ref` with `$defs` / `definitions` (a schema holding `$ref` keeps only
    it and its definitions). Every object gets `additionalProperties: false`, the only value Claude
    accepts, replacing whatever the client gave. A type list with one non-null member (a nullable
    value such as `["array", "null"]`) is treated as that member's kind; the list itself is kept.

    Dropped: `default` and `strict`. Everything else Claude rejects or enforces only partly
    (`minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`/`multipleOf`, `minLength`/
    `maxLength`, `pattern`, other `format` values, `minItems` above 1, `maxItems`, `uniqueItems`,
    `minProperties`/`maxProperties`, ...) moves into the schema's `description` as a
    `{keyword: value, ...}` note, so the model still sees the constraint even though the output is
    no longer forced to meet it. Recursion goes through every nested schema; non-dict values are
    returned as they are.
    """
    if not isinstance(schema, dict):
        return schema
    rest = dict(schema)
    out: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(rest.get(key), dict):
            out[key] = {name: strict_schema(sub) for name, sub in rest.pop(key).items()}
    if "$ref" in rest:
        out["$ref"] = rest.pop("$ref")
        return out
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(rest.get(key), list):
            out["anyOf" if key == "oneOf" else key] = [strict_schema(sub) for sub in rest.pop(key)]
    for key in ("type", "enum", "const", "description", "title"):
        if key in rest:
            out[key] = rest.pop(key)
    kind = _kind(out.get("type"))
    if kind == "object" or "properties" in rest:
        out["properties"] = {name: strict_schema(sub) for name, sub in (rest.pop("properties", None) or {}).items()}
        if "required" in rest:
            out["required"] = rest.pop("required")
        rest.pop("additionalProperties", None)
        out["additionalProperties"] = False
    elif kind == "array":
        if "items" in rest:
            out["items"] = strict_schema(rest.pop("items"))
        if rest.get("minItems") in (0, 1):
            out["minItems"] = rest.pop("minItems")
    elif kind == "string" and rest.get("format") in _STRING_FORMATS:
        out["format"] = rest.pop("format")
    rest.pop("default", None)
    rest.pop("strict", None)
    if rest:
        note = "{" + ", ".join(f"{key}: {_encode(value).decode()}" for key, value in rest.items()) + "}"
        out["description"] = f"{out['description']}\n\n{note}" if out.get("description") else note
    return out


def _kind(value: Any) -> Any:
    """The kind a `type` stands for: a list's one non-null member (`["array", "null"]` -> "array")."""
    if isinstance(value, list):
        kinds = [kind for kind in value if kind != "null"]
        return kinds[0] if len(kinds) == 1 else None
    return value
