"""JSON Schema -> the OpenAPI 3.0 subset Gemini's `Schema` object accepts.

Used only when a provider sets `options.schema_mode: openapi` (older models, proxies that lack
`parametersJsonSchema` / `responseJsonSchema`); by default the client's JSON Schema travels as is.

Nothing that constrains the output is dropped silently: a keyword the subset cannot express is
rejected with a 400 naming its place (`tools[0].parameters.properties.n.multipleOf`). What is
rewritten or dropped, and why that loses no constraint:

- `$ref` into `$defs` / `definitions` is inlined (a recursive reference is rejected);
- `type: [T, "null"]`, `anyOf`/`oneOf` with a `{"type": "null"}` branch and `null` in `enum` become
  `nullable: true`; `oneOf` becomes `anyOf` (Gemini has no exclusive union); a one-element `allOf`
  is merged into its parent, a longer one is rejected;
- `const` becomes a one-value `enum` (strings) or `minimum` = `maximum` (numbers);
- `exclusiveMinimum` / `exclusiveMaximum` on integers become `minimum + 1` / `maximum - 1`;
- `additionalProperties: false` and `true` are dropped (Gemini only ever produces the declared
  properties, so neither changes what it generates); a schema-valued one is rejected;
- annotation-only keywords are dropped: `$schema`, `$id`, `$anchor`, `$comment`, `examples`,
  `readOnly`, `writeOnly`, `deprecated`, `contentMediaType`, `contentEncoding`, and vendor `x-*` keys.
"""

from __future__ import annotations

import math
from typing import Any

from sluice.errors import InvalidRequest

# Keywords Gemini's Schema carries unchanged.
_PLAIN = frozenset({
    "format", "description", "title", "default", "example", "pattern", "minLength", "maxLength",
    "minimum", "maximum", "minItems", "maxItems", "minProperties", "maxProperties", "propertyOrdering",
})
# Keywords that only annotate: dropping them changes nothing the model may produce.
_ANNOTATIONS = frozenset({
    "$schema", "$id", "$anchor", "$comment", "examples", "readOnly", "writeOnly", "deprecated",
    "contentMediaType", "contentEncoding", "$defs", "definitions",
})
# Constraints the OpenAPI subset has no way to say.
_INEXPRESSIBLE = frozenset({
    "multipleOf", "uniqueItems", "not", "if", "then", "else", "patternProperties", "dependentRequired",
    "dependentSchemas", "dependencies", "prefixItems", "contains", "minContains", "maxContains",
    "unevaluatedProperties", "unevaluatedItems", "propertyNames", "$dynamicRef", "$recursiveRef",
})
_TYPES = {"string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN", "array": "ARRAY",
          "object": "OBJECT"}


def to_openapi_schema(schema: dict[str, Any], param: str) -> dict[str, Any]:
    """The Gemini `Schema` for a JSON Schema; `param` names it in errors (e.g. `tools[0].parameters`)."""
    defs: dict[str, Any] = {}
    for key in ("definitions", "$defs"):
        if isinstance(schema.get(key), dict):
            defs.update(schema[key])
    return _Converter(defs).convert(schema, param, ())


def _reject(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid schema at '{param}': {why} (Gemini's OpenAPI schema subset cannot express it).",
                          param=param, code="unsupported_parameter")


class _Converter:
    __slots__ = ("defs",)

    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def convert(self, node: Any, param: str, refs: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(node, dict):
            raise _reject(param, "a schema must be an object")
        if "$ref" in node:
            node, param, refs = self._resolve(node, param, refs)
        for key in ("anyOf", "oneOf"):
            if key in node:
                return self._union(node, key, param, refs)
        if "allOf" in node:
            parts = node["allOf"]
            if not isinstance(parts, list) or len(parts) != 1:
                raise _reject(f"{param}.allOf", "'allOf' with several schemas")
            merged = {k: v for k, v in node.items() if k != "allOf"}
            inner = parts[0]
            if isinstance(inner, dict) and "$ref" in inner:
                inner, _, refs = self._resolve(inner, f"{param}.allOf[0]", refs)
            return self.convert({**inner, **merged}, param, refs)
        kind = node.get("type")
        if isinstance(kind, list):
            return self._type_list(node, kind, param, refs)
        return self._single(node, kind, param, refs)

    def _resolve(self, node: dict[str, Any], param: str, refs: tuple[str, ...]) -> tuple[dict[str, Any], str,
                                                                                            tuple[str, ...]]:
        ref = node["$ref"]
        name = None
        if isinstance(ref, str):
            for prefix in ("#/$defs/", "#/definitions/"):
                if ref.startswith(prefix):
                    name = ref[len(prefix):]
        if name is None or name not in self.defs:
            raise _reject(f"{param}.$ref", f"reference {ref!r} does not point into '$defs'")
        if name in refs:
            raise _reject(f"{param}.$ref", f"recursive reference {ref!r}")
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return {**self.defs[name], **siblings}, param, (*refs, name)

    def _union(self, node: dict[str, Any], key: str, param: str, refs: tuple[str, ...]) -> dict[str, Any]:
        variants = node[key]
        if not isinstance(variants, list) or not variants:
            raise _reject(f"{param}.{key}", f"'{key}' must be a non-empty array")
        nullable = False
        kept = []
        for i, variant in enumerate(variants):
            if isinstance(variant, dict) and variant.get("type") == "null" and len(variant) == 1:
                nullable = True
            else:
                kept.append((i, variant))
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
        if len(kept) == 1:
            out = self.convert({**kept[0][1], **rest}, param, refs)
        else:
            out = self._single(rest, rest.get("type"), param, refs, allow_untyped=True)
            out["anyOf"] = [self.convert(v, f"{param}.{key}[{i}]", refs) for i, v in kept]
        if nullable:
            out["nullable"] = True
        return out

    def _type_list(self, node: dict[str, Any], kinds: list[Any], param: str, refs: tuple[str, ...]) -> dict[str, Any]:
        named = [k for k in kinds if k != "null"]
        if not named:
            raise _reject(f"{param}.type", "a schema that only allows null")
        if len(named) == 1:
            out = self._single(node, named[0], param, refs)
        else:
            rest = {k: v for k, v in node.items() if k != "type"}
            out = {"anyOf": [self._single(rest, k, param, refs) for k in named]}
        if "null" in kinds:
            out["nullable"] = True
        return out

    def _single(self, node: dict[str, Any], kind: Any, param: str, refs: tuple[str, ...], *,
                allow_untyped: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if kind is None:
            kind = _infer_type(node)
        if kind is not None:
            if kind not in _TYPES:
                raise _reject(f"{param}.type", f"type {kind!r}")
            out["type"] = _TYPES[kind]
        elif not allow_untyped:
            raise _reject(param, "a schema without a 'type' (any value)")
        for key, value in node.items():
            if key in _PLAIN:
                out[key] = value
            elif key == "type" or key in _ANNOTATIONS or key.startswith("x-"):
                continue
            elif key in _INEXPRESSIBLE:
                raise _reject(f"{param}.{key}", f"the '{key}' keyword")
            elif key == "nullable":
                if value:
                    out["nullable"] = True
            elif key == "properties":
                if not isinstance(value, dict):
                    raise _reject(f"{param}.properties", "'properties' must be an object")
                out["properties"] = {name: self.convert(sub, f"{param}.properties.{name}", refs)
                                     for name, sub in value.items()}
            elif key == "required":
                out["required"] = value
            elif key == "items":
                if isinstance(value, list):
                    raise _reject(f"{param}.items", "tuple-style 'items'")
                out["items"] = self.convert(value, f"{param}.items", refs)
            elif key == "additionalProperties":
                if isinstance(value, dict) and value:
                    raise _reject(f"{param}.additionalProperties", "a schema-valued 'additionalProperties' (a map)")
            elif key == "enum":
                self._enum(out, value, param)
            elif key == "const":
                self._const(out, value, param)
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                continue  # after the loop, so that a plain minimum / maximum cannot overwrite it
            elif key == "allOf":
                raise _reject(f"{param}.allOf", "'allOf' next to 'anyOf' / 'oneOf'")
            elif key in ("anyOf", "oneOf", "$ref"):
                continue  # handled by the caller
            else:
                continue  # an unknown keyword is an annotation in JSON Schema
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            if key in node:
                self._exclusive(out, node, key, node[key], param)
        return out

    @staticmethod
    def _enum(out: dict[str, Any], values: Any, param: str) -> None:
        if not isinstance(values, list):
            raise _reject(f"{param}.enum", "'enum' must be an array")
        named = [v for v in values if v is not None]
        if len(named) != len(values):
            out["nullable"] = True
        if not all(isinstance(v, str) for v in named):
            raise _reject(f"{param}.enum", "a non-string 'enum' (Gemini enums are strings)")
        out["enum"] = named
        out.setdefault("type", "STRING")

    @staticmethod
    def _const(out: dict[str, Any], value: Any, param: str) -> None:
        if isinstance(value, str):
            out["enum"] = [value]
            out.setdefault("type", "STRING")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out["minimum"] = out["maximum"] = value
            out.setdefault("type", "INTEGER" if isinstance(value, int) else "NUMBER")
        else:
            raise _reject(f"{param}.const", f"'const' of {type(value).__name__}")

    @staticmethod
    def _exclusive(out: dict[str, Any], node: dict[str, Any], key: str, value: Any, param: str) -> None:
        lower = key == "exclusiveMinimum"
        if isinstance(value, bool):  # draft-4 form: modifies `minimum` / `maximum`
            if not value:
                return
            value = node.get("minimum" if lower else "maximum")
        if out.get("type") != "INTEGER" or not isinstance(value, (int, float)):
            raise _reject(f"{param}.{key}", f"'{key}' on a non-integer")
        # The first integer strictly beyond the bound.
        if lower:
            out["minimum"] = math.floor(value) + 1
        else:
            out["maximum"] = math.ceil(value) - 1


def _infer_type(node: dict[str, Any]) -> str | None:
    if "properties" in node:
        return "object"
    if "items" in node:
        return "array"
    if "enum" in node or isinstance(node.get("const"), str):
        return "string"
    const = node.get("const")
    if isinstance(const, (int, float)) and not isinstance(const, bool):
        return "integer" if isinstance(const, int) else "number"
    return None
