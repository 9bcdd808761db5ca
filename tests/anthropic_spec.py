"""Validate a request body against Anthropic's official OpenAPI schema (shared/fixtures/specs).

A small JSON Schema checker for the subset the spec uses ($ref, oneOf/anyOf with discriminators,
properties/required/additionalProperties, enum/const, items, minLength/maxLength/pattern,
minimum/maximum). It returns a list of problems with their JSON path; empty means valid.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from tests.replay import fixtures_root

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


@cache
def _spec() -> dict[str, Any]:
    return json.loads((fixtures_root() / "specs" / "anthropic" / "openapi.yaml").read_text())


def _resolve(ref: str) -> dict[str, Any]:
    node: Any = _spec()
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def problems(value: Any, schema_name: str = "CreateMessageParams") -> list[str]:
    return _check(value, _resolve(f"#/components/schemas/{schema_name}"), "$")


def _check(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    if "$ref" in schema:
        return _check(value, _resolve(schema["$ref"]), path)
    variants = schema.get("oneOf") or schema.get("anyOf")
    if variants is not None:
        mapping = (schema.get("discriminator") or {}).get("mapping") or {}
        tag = value.get(schema["discriminator"]["propertyName"]) if mapping and isinstance(value, dict) else None
        if tag in mapping:
            return _check(value, _resolve(mapping[tag]), path)
        results = [_check(value, variant, path) for variant in variants]
        if any(not r for r in results):
            return []
        return [f"{path}: matches no variant ({min(results, key=len)[0]})"]
    if "allOf" in schema:
        return [p for sub in schema["allOf"] for p in _check(value, sub, path)]
    out: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        ok = any(isinstance(value, _TYPES[k]) and not (k in ("integer", "number") and isinstance(value, bool))
                 for k in kinds)
        if not ok:
            return [f"{path}: expected {kind}, got {type(value).__name__}"]
    if "const" in schema and value != schema["const"]:
        out.append(f"{path}: expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{path}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{path}: above {schema['maximum']}")
    if isinstance(value, dict) and ("properties" in schema or kind == "object"):
        props = schema.get("properties") or {}
        for name in schema.get("required") or ():
            if name not in value:
                out.append(f"{path}: missing {name!r}")
        for name, sub in value.items():
            if name in props:
                out += _check(sub, props[name], f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}: unexpected property {name!r}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, sub in enumerate(value):
            out += _check(sub, schema["items"], f"{path}[{i}]")
    return out
