"""The JSON schema narrowing for Claude's structured output, shared by the Anthropic and Bedrock adapters.

Unit tests of `strict_schema`, the Bedrock request builder applying it only to Claude model ids, and one
request driven through a real gateway to a Bedrock Claude route, checking the `outputConfig` schema the
replay server received.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from botocore.model import ServiceModel
from botocore.validate import ParamValidator

from sluice.canonical.request import parse_request
from sluice.providers import anthropic_request
from sluice.providers.bedrock_request import build_body
from sluice.providers.claude_schema import strict_schema
from tests.conftest import MASTER_KEY, running_gateway
from tests.replay.recordings import fixtures_root, load
from tests.replay.server import ReplayServer

FIX = fixtures_root()
REC = Path(__file__).parent / "recordings" / "bedrock"
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
SERVICE = ServiceModel(json.loads((FIX / "specs/bedrock/service-2.json").read_text()), "bedrock-runtime")

CLAUDE_45 = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
NOVA = "us.amazon.nova-micro-v1:0"

CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
providers:
  replay-bedrock:
    type: bedrock
    base_url: {upstream}
    region: us-east-1
    aws_access_key_id: AKIDTEST
    aws_secret_access_key: test-secret
models:
  claude-bedrock:
    capabilities: [json_schema]
    routes:
      - {{provider: replay-bedrock, model: "{claude45}"}}
"""

# A schema with keywords Claude's structured output rejects, at several depths.
WIDE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Person",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 40, "description": "Full name"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150, "default": 30},
        "email": {"type": "string", "format": "email"},
        "code": {"type": "string", "pattern": "^[A-Z]{3}$", "format": "hex-color"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 2, "maxItems": 5},
        "pets": {"type": "array", "items": {"$ref": "#/$defs/Pet"}, "minItems": 1},
        "contact": {"oneOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["name", "age"],
    "additionalProperties": True,
    "$defs": {"Pet": {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]}},
                      "additionalProperties": {"type": "string"}, "minProperties": 1}},
}

NARROWED: dict[str, Any] = {
    "$defs": {"Pet": {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]}}, "additionalProperties": False,
                      "description": "{minProperties: 1}"}},
    "type": "object",
    "title": "Person",
    "properties": {
        "name": {"type": "string", "description": "Full name\n\n{minLength: 1, maxLength: 40}"},
        "age": {"type": "integer", "description": "{minimum: 0, maximum: 150}"},
        "email": {"type": "string", "format": "email"},
        "code": {"type": "string", "description": '{pattern: "^[A-Z]{3}$", format: "hex-color"}'},
        "tags": {"type": "array", "items": {"type": "string", "description": "{maxLength: 10}"},
                 "description": "{minItems: 2, maxItems: 5}"},
        "pets": {"type": "array", "items": {"$ref": "#/$defs/Pet"}, "minItems": 1},
        "contact": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


# --- strict_schema --------------------------------------------------------------------------------


def test_narrows_unsupported_keywords_into_descriptions() -> None:
    assert strict_schema(WIDE_SCHEMA) == NARROWED


def test_input_is_not_modified() -> None:
    before = json.dumps(WIDE_SCHEMA, sort_keys=True)
    strict_schema(WIDE_SCHEMA)
    assert json.dumps(WIDE_SCHEMA, sort_keys=True) == before


def test_supported_schema_only_gains_additional_properties_false() -> None:
    schema = {"type": "object", "properties": {
        "when": {"type": "string", "format": "date-time"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "number"}},
                                             "required": ["n"]}, "minItems": 0},
        "kind": {"const": "x"}, "choice": {"allOf": [{"type": "string"}]}}, "required": ["when"]}
    out = strict_schema(schema)
    assert out.pop("additionalProperties") is False
    assert out["properties"]["items"]["items"].pop("additionalProperties") is False
    assert out == schema


def test_ref_keeps_only_the_reference_and_definitions() -> None:
    schema = {"$ref": "#/definitions/A", "description": "ignored next to $ref", "minimum": 1,
              "definitions": {"A": {"type": "object", "properties": {}, "maxProperties": 3}}}
    assert strict_schema(schema) == {
        "definitions": {"A": {"type": "object", "properties": {}, "additionalProperties": False,
                              "description": "{maxProperties: 3}"}},
        "$ref": "#/definitions/A"}


def test_properties_without_type_are_treated_as_an_object() -> None:
    assert strict_schema({"properties": {"a": {"type": "boolean"}}}) == {
        "properties": {"a": {"type": "boolean"}}, "additionalProperties": False}


def test_default_and_strict_are_dropped_and_non_dicts_pass_through() -> None:
    assert strict_schema({"type": "string", "default": "x", "strict": True}) == {"type": "string"}
    assert strict_schema(True) is True
    assert strict_schema([1, 2]) == [1, 2]


def test_anthropic_adapter_uses_the_shared_function() -> None:
    assert anthropic_request.strict_schema is strict_schema
    parsed = parse_request(json.dumps({"model": "m", "input": "hi", "text": {"format": {
        "type": "json_schema", "name": "person", "schema": WIDE_SCHEMA}}}).encode())
    body, _plan = anthropic_request.build_body(parsed, "claude-sonnet-4-5", False, {})
    assert body["output_config"]["format"] == {"type": "json_schema", "schema": NARROWED}


# --- Bedrock: only Claude models are narrowed -----------------------------------------------------


def _bedrock_schema(model: str) -> Any:
    parsed = parse_request(json.dumps({"model": "m", "input": "hi", "text": {"format": {
        "type": "json_schema", "name": "person", "schema": WIDE_SCHEMA}}}).encode())
    body, _plan = build_body(parsed, model, {})
    structure = body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
    assert structure["name"] == "person"
    return json.loads(structure["schema"])


@pytest.mark.parametrize("model", [CLAUDE_45, "anthropic.claude-haiku-4-5-20251001-v1:0",
                                   "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-opus-4-5-20251101-v1:0"])
def test_bedrock_claude_schema_is_narrowed(model: str) -> None:
    assert _bedrock_schema(model) == NARROWED


@pytest.mark.parametrize("model", [NOVA, "openai.gpt-oss-120b-1:0", "qwen.qwen3-32b-v1:0"])
def test_bedrock_other_models_get_the_schema_unchanged(model: str) -> None:
    assert _bedrock_schema(model) == WIDE_SCHEMA


# --- through the gateway --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    db = Path(tmp_path_factory.mktemp("claude-schema-db")) / "sluice.db"
    text = CONFIG.format(db=db, master=MASTER_KEY, upstream=upstream.url, claude45=CLAUDE_45)
    with running_gateway(text) as running:
        yield running


def test_gateway_sends_narrowed_schema_to_bedrock_claude(gw: Any, upstream: ReplayServer) -> None:
    upstream.enqueue(load(REC / "structured-output.json", provider="bedrock"))
    body = {"model": "claude-bedrock", "input": "Describe a person.",
            "text": {"format": {"type": "json_schema", "name": "person", "strict": True, "schema": WIDE_SCHEMA}}}
    resp = httpx.post(f"{gw.url}/v1/responses", json=body, headers=AUTH, timeout=20)
    assert resp.status_code == 200, resp.text

    received = upstream.requests[-1]
    match = re.fullmatch(r"/model/([^/]+)/converse", received.path)
    assert match and unquote(match.group(1)) == CLAUDE_45
    sent = received.json
    report = ParamValidator().validate({"modelId": CLAUDE_45, **sent},
                                       SERVICE.operation_model("Converse").input_shape)
    assert not report.has_errors(), report.generate_report()
    fmt = sent["outputConfig"]["textFormat"]
    assert fmt["type"] == "json_schema" and fmt["structure"]["jsonSchema"]["name"] == "person"
    assert json.loads(fmt["structure"]["jsonSchema"]["schema"]) == NARROWED
