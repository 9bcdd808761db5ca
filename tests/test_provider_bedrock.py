"""The Bedrock Converse / ConverseStream adapter, driven through a real gateway with the `openai` SDK.

Every recording under shared/fixtures/bedrock is replayed; what Sluice sent upstream is checked
against the official service model (botocore's validator over service-2.json), against the
recorded request where the recording has one, and for a valid SigV4 signature recomputed with
botocore. Scenarios the shared recordings lack live in tests/recordings/bedrock (PROVENANCE.md).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import httpx
import openai
import pydantic
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.model import ServiceModel
from botocore.validate import ParamValidator
from openai.types.responses import Response, ResponseStreamEvent

from sluice.canonical.reasoning import seal, unseal
from sluice.canonical.request import parse_request
from sluice.config import ProviderConfig
from sluice.providers import bedrock as bedrock_module
from sluice.providers.bedrock import BedrockAdapter
from sluice.providers.bedrock_request import build_body, model_family
from sluice.providers.bedrock_response import ConverseTranslator, usage
from sluice.providers.claude_policy import ANSWER_ROOM, THINKING_BUDGETS
from tests import bedrock_make_recordings as made
from tests.conftest import MASTER_KEY, _free_port, running_gateway
from tests.replay.recordings import Exchange, all_recordings, fixtures_root, load
from tests.replay.server import ReceivedRequest, ReplayServer
from tests.sse import assert_well_formed, read_events

FIX = fixtures_root()
REC = Path(__file__).parent / "recordings" / "bedrock"
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
SERVICE = ServiceModel(json.loads((FIX / "specs/bedrock/service-2.json").read_text()), "bedrock-runtime")
RECORDINGS = all_recordings("bedrock")
SECRET = "test-secret"

CLAUDE_45 = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
CLAUDE_PRICE = {"input": 3.0, "cached_input": 0.3, "cache_write": 3.75, "output": 15.0}
NOVA_PRICE = {"input": 0.035, "cached_input": 0.00875, "output": 0.14}
PRICES = {"claude-bedrock": CLAUDE_PRICE, "claude-sonnet-4-bedrock": CLAUDE_PRICE, "claude-3-7-bedrock": CLAUDE_PRICE,
          "nova-micro-bedrock": NOVA_PRICE, "nova-guarded": NOVA_PRICE}
# Recorded modelId -> the configured model serving it (so responses are priced).
MODEL_BY_ID = {CLAUDE_45: "claude-bedrock", "us.anthropic.claude-sonnet-4-20250514-v1:0": "claude-sonnet-4-bedrock",
               "us.anthropic.claude-3-7-sonnet-20250219-v1:0": "claude-3-7-bedrock",
               "us.amazon.nova-micro-v1:0": "nova-micro-bedrock"}
CAPS = "[tools, parallel_tool_calls, images, files, reasoning, prompt_caching, temperature, json_schema]"

CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
# The adapter's translation is what this file checks: one call per request, one recorded error
# after another through one route — no retry on the same route (tests/test_failover_errors.py),
# no cooldown answering for the route (tests/test_affinity.py, tests/test_cooldowns.py).
routing: {{retries: 0, cooldown: {{enabled: false}}}}
providers:
  replay-bedrock:
    type: bedrock
    base_url: {upstream}
    region: us-east-1
    aws_access_key_id: AKIDTEST
    aws_secret_access_key: test-secret
  replay-bedrock-session:
    type: bedrock
    base_url: {upstream}
    region: us-east-1
    aws_access_key_id: AKIDTEST
    aws_secret_access_key: test-secret
    aws_session_token: test-session-token
  replay-bedrock-key:
    type: bedrock
    base_url: {upstream}
    region: us-east-1
    api_key: test-bedrock-api-key
  replay-bedrock-tooljson:
    type: bedrock
    base_url: {upstream}
    region: us-east-1
    aws_access_key_id: AKIDTEST
    aws_secret_access_key: test-secret
    options: {{structured_output: tool}}
  replay-bedrock-guarded:
    type: bedrock
    base_url: {upstream}
    region: us-east-1
    aws_access_key_id: AKIDTEST
    aws_secret_access_key: test-secret
    options:
      guardrail_config: {{guardrailIdentifier: xbgw7g293v7o, guardrailVersion: DRAFT, trace: enabled}}
  dead-bedrock:
    type: bedrock
    base_url: http://127.0.0.1:{dead_port}
    region: us-east-1
    aws_access_key_id: AKIDTEST
    aws_secret_access_key: test-secret
    connect_timeout: 2
models:
  claude-bedrock:
    capabilities: {caps}
    routes:
      - {{provider: replay-bedrock, model: "{claude45}", price: {claude_price}}}
  claude-sonnet-4-bedrock:
    capabilities: {caps}
    routes:
      - {{provider: replay-bedrock, model: "us.anthropic.claude-sonnet-4-20250514-v1:0", price: {claude_price}}}
  claude-3-7-bedrock:
    capabilities: {caps}
    routes:
      - {{provider: replay-bedrock, model: "us.anthropic.claude-3-7-sonnet-20250219-v1:0", price: {claude_price}}}
  nova-micro-bedrock:
    capabilities: [tools, images, files, temperature, prompt_caching]
    routes:
      - {{provider: replay-bedrock, model: "us.amazon.nova-micro-v1:0", price: {nova_price}}}
  nova-guarded:
    capabilities: [tools, temperature]
    routes:
      - {{provider: replay-bedrock-guarded, model: "us.amazon.nova-micro-v1:0", price: {nova_price}}}
  claude-bedrock-key:
    routes:
      - {{provider: replay-bedrock-key, model: "{claude45}", price: {claude_price}}}
  claude-bedrock-session:
    routes:
      - {{provider: replay-bedrock-session, model: "{claude45}", price: {claude_price}}}
  claude-bedrock-tooljson:
    capabilities: {caps}
    routes:
      - {{provider: replay-bedrock-tooljson, model: "{claude45}", price: {claude_price}}}
  claude-failover:
    routes:
      - {{provider: replay-bedrock, model: "{claude45}", price: {claude_price}}}
      - {{provider: replay-bedrock-key, model: "{claude45}", price: {claude_price}}}
  claude-dead-then-live:
    routes:
      - {{provider: dead-bedrock, model: "{claude45}"}}
      - {{provider: replay-bedrock, model: "{claude45}", price: {claude_price}}}
"""


def _flow(price: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in price.items()) + "}"


@pytest.fixture(scope="module")
def gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    db = Path(tmp_path_factory.mktemp("bedrock-db")) / "sluice.db"
    text = CONFIG.format(db=db, master=MASTER_KEY, upstream=upstream.url, dead_port=_free_port(), caps=CAPS,
                         claude45=CLAUDE_45, claude_price=_flow(CLAUDE_PRICE), nova_price=_flow(NOVA_PRICE))
    with running_gateway(text) as running:
        yield running


@pytest.fixture
def bclient(gw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)


# --- helpers: what was sent upstream ------------------------------------------------------------


def assert_valid_converse(received: ReceivedRequest) -> dict[str, Any]:
    """The request body is a valid Converse/ConverseStream input per the official service model."""
    assert received.method == "POST"
    match = re.fullmatch(r"/model/([^/]+)/(converse|converse-stream)", received.path)
    assert match, received.path
    model_id = unquote(match.group(1))
    assert "%" not in model_id and ":" not in match.group(1), "the modelId must be percent-encoded once"
    operation = SERVICE.operation_model("ConverseStream" if match.group(2) == "converse-stream" else "Converse")
    report = ParamValidator().validate({"modelId": model_id, **received.json}, operation.input_shape)
    assert not report.has_errors(), report.generate_report()
    assert received.headers["content-type"] == "application/json"
    return received.json


def verify_sigv4(received: ReceivedRequest, base_url: str, token: str | None = None) -> str:
    """Recompute the SigV4 signature with botocore over what the server received; returns the canonical request."""
    found = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                         r"SignedHeaders=([a-z0-9;\-]+), Signature=([0-9a-f]{64})", received.headers["authorization"])
    assert found, received.headers["authorization"]
    access, date, region, service, signed, signature = found.groups()
    assert (access, region, service) == ("AKIDTEST", "us-east-1", "bedrock")
    names = signed.split(";")
    assert {"content-type", "host", "x-amz-date"} <= set(names)
    assert received.headers["x-amz-date"].startswith(date)
    if token:
        assert "x-amz-security-token" in names and received.headers["x-amz-security-token"] == token
    request = AWSRequest(method=received.method, url=base_url + received.path, data=received.body,
                         headers={name: received.headers[name] for name in names})
    request.context["timestamp"] = received.headers["x-amz-date"]
    signer = SigV4Auth(Credentials(access, SECRET, token), service, region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    assert hmac.compare_digest(expected, signature), "SigV4 signature does not match the received request"
    return canonical


def normalized_recorded(body: dict[str, Any]) -> dict[str, Any]:
    """A recorded request without the empty members pydantic-ai always sends."""
    return {k: v for k, v in body.items() if v not in ({}, [])}


def normalized_sent(sent: dict[str, Any], recorded: dict[str, Any]) -> dict[str, Any]:
    sent = json.loads(json.dumps(sent))
    thinking = (sent.get("additionalModelRequestFields") or {}).get("thinking")
    if thinking and "maxTokens" not in (recorded.get("inferenceConfig") or {}):
        # Sluice gives thinking room explicitly (budget + answer); the recording relied on the default.
        assert sent["inferenceConfig"]["maxTokens"] == thinking["budget_tokens"] + ANSWER_ROOM
        del sent["inferenceConfig"]["maxTokens"]
        if not sent["inferenceConfig"]:
            del sent["inferenceConfig"]
    return sent


_MIME = {"txt": "text/plain", "pdf": "application/pdf", "csv": "text/csv", "md": "text/markdown", "html": "text/html"}
_EFFORT_BY_BUDGET = {budget: effort for effort, budget in THINKING_BUDGETS.items()}


def responses_request(body: dict[str, Any]) -> dict[str, Any]:
    """The Responses request whose translation is exactly this recorded Converse request."""
    kwargs: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    system = body.get("system") or []
    if len(system) == 1 and "text" in system[0]:
        kwargs["instructions"] = system[0]["text"]
    else:
        for block in system:
            if "cachePoint" in block:
                items[-1]["cache_control"] = {"type": "ephemeral"}
            else:
                items.append({"role": "system", "content": block["text"]})
    for message in body["messages"]:
        assert message["role"] == "user", "only first-turn requests are rebuilt; history comes from turn 1"
        parts: list[dict[str, Any]] = []
        for block in message["content"]:
            if "cachePoint" in block:
                items.append({"role": "user", "content": parts, "cache_control": {"type": "ephemeral"}})
                parts = []
            elif "text" in block:
                parts.append({"type": "input_text", "text": block["text"]})
            elif "document" in block:
                doc = block["document"]
                parts.append({"type": "input_file", "filename": f"{doc['name']}.{doc['format']}",
                              "file_data": f"data:{_MIME[doc['format']]};base64,{doc['source']['bytes']}"})
        if parts:
            items.append({"role": "user", "content": parts})
    kwargs["input"] = items
    inference = body.get("inferenceConfig") or {}
    for source, target in (("maxTokens", "max_output_tokens"), ("temperature", "temperature"), ("topP", "top_p")):
        if source in inference:
            kwargs[target] = inference[source]
    thinking = (body.get("additionalModelRequestFields") or {}).get("thinking")
    if thinking:
        kwargs["reasoning"] = {"effort": _EFFORT_BY_BUDGET[thinking["budget_tokens"]]}
    tool_config = body.get("toolConfig")
    if tool_config:
        tools: list[dict[str, Any]] = []
        for tool in tool_config["tools"]:
            if "cachePoint" in tool:
                tools[-1]["cache_control"] = {"type": "ephemeral"}
                continue
            spec = tool["toolSpec"]
            tools.append({"type": "function", "name": spec["name"], "parameters": spec["inputSchema"]["json"],
                          "strict": False, **({"description": spec["description"]} if "description" in spec else {})})
        kwargs["tools"] = tools
        choice = tool_config.get("toolChoice")
        if choice:
            kwargs["tool_choice"] = "auto" if "auto" in choice else "required" if "any" in choice else {
                "type": "function", "name": choice["tool"]["name"]}
    return kwargs


# --- helpers: what came back --------------------------------------------------------------------


def recorded_usage(exchange: Exchange) -> dict[str, Any] | None:
    if exchange.stream:
        found = [payload["usage"] for kind, payload in exchange.events() if kind == "metadata"]
        return found[-1] if found else None
    return exchange.json().get("usage")


def check_usage(response: Any, raw: dict[str, Any] | None, model: str) -> None:
    if raw is None:
        assert response.usage.total_tokens == 0
        return
    read, write = raw.get("cacheReadInputTokens") or 0, raw.get("cacheWriteInputTokens") or 0
    usage_out = response.usage
    assert usage_out.input_tokens == raw["inputTokens"] + read + write
    assert usage_out.input_tokens_details.cached_tokens == read
    assert (usage_out.input_tokens_details.model_extra or {}).get("cached_tokens_created") == write
    assert usage_out.output_tokens == raw["outputTokens"]
    assert usage_out.total_tokens == usage_out.input_tokens + usage_out.output_tokens
    if raw.get("totalTokens") and (read or write):
        assert usage_out.total_tokens == raw["totalTokens"]  # Bedrock's total already counts the cache
    price = PRICES.get(model)
    if price:
        expected = (raw["inputTokens"] * price["input"] + read * price.get("cached_input", price["input"])
                    + write * price.get("cache_write", price["input"]) + raw["outputTokens"] * price["output"]) / 1e6
        assert response.cost["total"] == pytest.approx(expected, rel=1e-9, abs=1e-12)  # type: ignore[attr-defined]


def assemble(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The non-streaming Converse answer equivalent to a ConverseStream run."""
    blocks: dict[int, dict[str, Any]] = {}
    stop, usage_raw = "end_turn", None
    for kind, payload in events:
        index = payload.get("contentBlockIndex", 0)
        if kind == "contentBlockStart" and "toolUse" in payload["start"]:
            blocks[index] = {"toolUse": {**payload["start"]["toolUse"], "input": ""}}
        elif kind == "contentBlockDelta":
            delta = payload["delta"]
            if "text" in delta:
                block = blocks.setdefault(index, {"text": ""})
                block["text"] += delta["text"]
            elif "toolUse" in delta:
                blocks[index]["toolUse"]["input"] += delta["toolUse"]["input"]
            elif "reasoningContent" in delta:
                rc = blocks.setdefault(index, {"reasoningContent": {}})["reasoningContent"]
                piece = delta["reasoningContent"]
                if "redactedContent" in piece:
                    rc["redactedContent"] = rc.get("redactedContent", "") + piece["redactedContent"]
                else:
                    text = rc.setdefault("reasoningText", {"text": ""})
                    text["text"] += piece.get("text", "")
                    if "signature" in piece:
                        text["signature"] = piece["signature"]
        elif kind == "messageStop":
            stop = payload["stopReason"]
        elif kind == "metadata":
            usage_raw = payload["usage"]
    content = []
    for index in sorted(blocks):
        block = blocks[index]
        if "toolUse" in block:
            block["toolUse"]["input"] = json.loads(block["toolUse"]["input"] or "{}")
        content.append(block)
    data: dict[str, Any] = {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
                            "metrics": {"latencyMs": 1}}
    if usage_raw:
        data["usage"] = usage_raw
    return data


def json_exchange(data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Exchange:
    return Exchange(method="POST", path="/model/x/converse", request_body=None, status=status,
                    headers={"content-type": "application/json", **(headers or {})}, body=json.dumps(data).encode(),
                    stream=False, source="made-in-test")


def comparable(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Output items without ids, with function arguments as parsed JSON."""
    out = []
    for item in output:
        item = {k: v for k, v in item.items() if k != "id"}
        if item["type"] == "function_call":
            item["arguments"] = json.loads(item["arguments"])
        out.append(item)
    return out


def sdk_shape(data: dict[str, Any]) -> dict[str, Any]:
    """Add `usage.input_tokens_details.cache_write_tokens`, which the installed SDK's types require.

    Sluice's shared `normalize_usage` reports cache writes only as `cached_tokens_created`; this is
    a local workaround until the shared usage shape carries OpenAI's name too (see the report).
    """
    response = data.get("response") if isinstance(data.get("response"), dict) else data
    details = (response.get("usage") or {}).get("input_tokens_details")
    if isinstance(details, dict):
        details.setdefault("cache_write_tokens", details.get("cached_tokens_created", 0))
    return data


def validate_response(data: dict[str, Any]) -> Response:
    return Response.model_validate(sdk_shape(data))


def usage_tuple(response: Response) -> tuple[int, ...]:
    u = response.usage
    assert u is not None
    return u.input_tokens, u.input_tokens_details.cached_tokens, u.output_tokens, u.total_tokens


def post_raw(gw: Any, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/responses", json=body, headers=AUTH, timeout=20)


def stream_raw(gw: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{gw.url}/v1/responses", json={**body, "stream": True}, headers=AUTH,
                      timeout=20) as resp:
        assert resp.status_code == 200, resp.read()
        events = read_events(resp)
    assert_well_formed(events)
    adapter = pydantic.TypeAdapter(ResponseStreamEvent)
    for event in events:
        event = json.loads(json.dumps(event))
        error = (event.get("response") or {}).get("error") or {}
        if str(error.get("code")).startswith("upstream_"):
            # The gateway's own failure codes (not the adapter's) are outside the SDK's closed set.
            error["code"] = "server_error"
        adapter.validate_python(sdk_shape(event))  # every event is one the official SDK types know
    return events


# --- every shared recording -------------------------------------------------------------------


def _ids(path: Path) -> str:
    return str(path.relative_to(FIX / "bedrock"))


def _model_for(exchange: Exchange, path: Path) -> str:
    if "guardrail" in path.name:
        return "nova-guarded"
    if exchange.request_body is None:
        return "claude-bedrock"  # vercel fixtures: no request recorded
    model_id = unquote(exchange.path.split("/")[2])
    return MODEL_BY_ID.get(model_id, f"replay-bedrock/{model_id}")


@pytest.mark.parametrize("path", RECORDINGS, ids=_ids)
def test_replay_recording(path: Path, gw: Any, bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    exchanges = load(path)
    previous: Response | None = None
    first_input: list[dict[str, Any]] = []
    for turn, exchange in enumerate(exchanges):
        model = _model_for(exchange, path)
        recorded = exchange.request_body
        if recorded is None:
            request: dict[str, Any] = {"input": "Count the r's in strawberry."}
            if "json-with-tools" in path.name:
                model = "claude-bedrock-tooljson"
                request["tools"] = [{"type": "function", "name": n, "parameters": {"type": "object"}, "strict": False}
                                    for n in ("tool-a", "tool-b")]
                request["text"] = {"format": {"type": "json_schema", "name": "json", "strict": True, "schema": {
                    "type": "object", "properties": {"final": {"type": "string"}}, "required": ["final"],
                    "additionalProperties": False}}}
        elif turn == 0 or all(m["role"] == "user" for m in recorded["messages"]):
            request = responses_request(recorded)
            first_input = request["input"]
        else:
            # The second turn of a cassette: the history is the client's round trip of turn 1.
            assert previous is not None
            request = responses_request({**recorded, "messages": recorded["messages"][-1:]})
            request["input"] = [*first_input, *(i.model_dump(exclude_none=True) for i in previous.output),
                                *request["input"]]
        request["include"] = ["reasoning.encrypted_content"]
        if "reasoning" in request:
            request["reasoning"]["summary"] = "auto"  # (the Converse request is the same with or without)

        upstream.enqueue(exchange)
        if exchange.status >= 400:
            resp = post_raw(gw, {"model": model, **request})
            assert resp.status_code == exchange.status
            error = resp.json()["error"]
            assert json.loads(exchange.body)["message"] in error["message"]
            assert error["type"] == "invalid_request_error"
            sent = assert_valid_converse(upstream.requests[-1])
            assert upstream.requests[-1].path == exchange.path
            assert normalized_sent(sent, recorded) == normalized_recorded(recorded)
            continue

        if exchange.stream:
            response = _replay_stream(bclient, gw, upstream, exchange, model, request)
        else:
            raw = post_raw(gw, {"model": model, **request})
            assert raw.status_code == 200, raw.text
            response = validate_response(raw.json())
        received = upstream.requests[-1]
        sent = assert_valid_converse(received)
        verify_sigv4(received, upstream.url)
        if recorded is not None:
            assert received.path == exchange.path, "modelId must be percent-encoded exactly as botocore does"
            assert normalized_sent(sent, recorded) == normalized_recorded(recorded)
        check_usage(response, recorded_usage(exchange), model)
        _check_content(path, exchange, response, summary="reasoning" in request)
        previous = response


def _replay_stream(client: openai.OpenAI, gw: Any, upstream: ReplayServer, exchange: Exchange, model: str,
                   request: dict[str, Any]) -> Response:
    # 1. The official SDK's stream helper accepts the stream.
    with client.responses.stream(model=model, **request) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text
    # 2. The raw SSE is well formed, every event validates against the SDK's event types.
    upstream.enqueue(exchange)
    events = stream_raw(gw, {"model": model, **request})
    terminal = validate_response(events[-1]["response"])
    assert comparable(terminal.model_dump(exclude_none=True)["output"]) == comparable(
        final.model_dump(exclude_none=True)["output"])
    # 3. The same answer, non-streamed, has the same shape.
    upstream.enqueue(json_exchange(assemble(list(exchange.events()))))
    created = validate_response(post_raw(gw, {"model": model, **request}).json())
    assert created.status == final.status
    assert comparable(created.model_dump(exclude_none=True)["output"]) == comparable(
        final.model_dump(exclude_none=True)["output"])
    assert usage_tuple(created) == usage_tuple(final)
    upstream.requests.pop()
    upstream.requests.pop()  # keep requests[-1] = the SDK stream's request
    return final


def _check_content(path: Path, exchange: Exchange, response: Response, summary: bool) -> None:
    data = assemble(list(exchange.events())) if exchange.stream else exchange.json()
    content = data["output"]["message"]["content"]
    texts = "".join(b["text"] for b in content if "text" in b)
    stop = data["stopReason"]
    if "json-with-tools" in path.name:
        assert [i.type for i in response.output] == ["function_call", "function_call", "message"]
        assert response.output_text == '{"final":"result"}'  # preamble text dropped, the answer tool as text
        assert json.loads(response.output[0].arguments) == {"a": "1"}  # type: ignore[union-attr]
    else:
        assert response.output_text == texts
    calls = [i for i in response.output if i.type == "function_call"]
    if "json-with-tools" not in path.name:
        assert [(c.call_id, c.name) for c in calls] == [(b["toolUse"]["toolUseId"], b["toolUse"]["name"])
                                                       for b in content if "toolUse" in b]
    reasoning = [i for i in response.output if i.type == "reasoning"]
    recorded_reasoning = [b["reasoningContent"] for b in content if "reasoningContent" in b]
    assert len(reasoning) == len(recorded_reasoning)
    for item, block in zip(reasoning, recorded_reasoning, strict=True):
        state = unseal(item.encrypted_content, "bedrock")
        assert state is not None
        if "redactedContent" in block:
            assert state["redacted"] == block["redactedContent"] and not item.content
        else:
            # Claude's thinking is the reasoning summary when one is asked for, else only sealed.
            assert state["text"] == block["reasoningText"]["text"]
            assert [part.text for part in item.summary] == ([state["text"]] if summary else [])
            assert not item.content
            assert state["signature"] == block["reasoningText"]["signature"]
    if stop == "max_tokens":
        assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]
    else:
        assert response.status == "completed"


def test_every_shared_recording_is_replayed() -> None:
    names = {p.name for p in RECORDINGS}
    assert len(RECORDINGS) == 15
    assert {"test_bedrock_model_stream.yaml", "amazon-bedrock-json-with-tools.1.chunks.txt"} <= names


# --- signing, endpoint, credentials ------------------------------------------------------------


def test_sigv4_signature_and_encoded_path(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "bedrock/vercel-ai/amazon-bedrock-text.json"))
    bclient.responses.create(model="claude-bedrock", input="hi")
    received = upstream.requests[-1]
    assert received.path == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    canonical = verify_sigv4(received, upstream.url)
    # SigV4 canonical URIs encode each segment again (botocore: quote(path, safe='/~')).
    assert canonical.splitlines()[1] == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%253A0/converse"
    # The check is not vacuous: one changed byte of the body breaks it.
    tampered = received._replace(body=received.body.replace(b"hi", b"ho"))
    with pytest.raises(AssertionError, match="does not match"):
        verify_sigv4(tampered, upstream.url)


def test_sigv4_with_session_token(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "bedrock/vercel-ai/amazon-bedrock-text.json"))
    bclient.responses.create(model="claude-bedrock-session", input="hi")
    verify_sigv4(upstream.requests[-1], upstream.url, token="test-session-token")


def test_bedrock_api_key_is_a_bearer_token(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "bedrock/vercel-ai/amazon-bedrock-text.json"))
    bclient.responses.create(model="claude-bedrock-key", input="hi")
    received = upstream.requests[-1]
    assert received.headers["authorization"] == "Bearer test-bedrock-api-key"
    assert "x-amz-date" not in received.headers
    assert_valid_converse(received)


def test_model_arn_is_one_path_segment(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123def456"
    upstream.enqueue(load(FIX / "bedrock/vercel-ai/amazon-bedrock-text.json"))
    bclient.responses.create(model=f"replay-bedrock/{arn}", input="hi")
    received = upstream.requests[-1]
    assert received.path == ("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile"
                             "%2Fabc123def456/converse")
    verify_sigv4(received, upstream.url)


def _adapter(**config: Any) -> BedrockAdapter:
    return BedrockAdapter("bedrock-unit", ProviderConfig(type="bedrock", **config), None)  # type: ignore[arg-type]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_BEARER_TOKEN_BEDROCK", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def test_environment_credentials_resolved_once(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIDENVTEST")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    aws_env.setenv("AWS_REGION", "eu-west-3")
    built = []
    real_session = bedrock_module.Session

    def counting_session(*args: Any, **kwargs: Any) -> Any:
        built.append(kwargs)
        return real_session(*args, **kwargs)

    aws_env.setattr(bedrock_module, "Session", counting_session)
    adapter = _adapter()
    assert adapter.region == "eu-west-3"
    parsed = parse_request(b'{"model": "m", "input": "hi"}')

    async def run() -> list[dict[str, str]]:
        out = []
        for _ in range(3):
            url, _payload, headers, _plan = await adapter._prepare(parsed, CLAUDE_45, False)
            assert str(url).startswith("https://bedrock-runtime.eu-west-3.amazonaws.com/model/us.anthropic.")
            out.append(headers)
        return out

    headers = asyncio.run(run())
    assert len(built) == 1, "the botocore session (slow) is built once per adapter, not per request"
    assert all("Credential=AKIDENVTEST/" in h["Authorization"] and "/eu-west-3/bedrock/" in h["Authorization"]
               for h in headers)


def test_profile_credentials_and_region(aws_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "credentials").write_text("[sluice-test]\naws_access_key_id = AKIDPROFILE\n"
                                          "aws_secret_access_key = profile-secret\n")
    (tmp_path / "config").write_text("[profile sluice-test]\nregion = ap-southeast-2\n")
    adapter = _adapter(options={"profile": "sluice-test"})
    parsed = parse_request(b'{"model": "m", "input": "hi"}')
    url, _, headers, _ = asyncio.run(adapter._prepare(parsed, "amazon.nova-micro-v1:0", True))
    assert str(url) == "https://bedrock-runtime.ap-southeast-2.amazonaws.com/model/amazon.nova-micro-v1%3A0/converse-stream"
    assert "Credential=AKIDPROFILE/" in headers["Authorization"]


def test_bearer_token_from_environment(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_BEARER_TOKEN_BEDROCK", "env-bedrock-key")
    aws_env.setenv("AWS_DEFAULT_REGION", "us-west-2")
    adapter = _adapter()
    parsed = parse_request(b'{"model": "m", "input": "hi"}')
    url, _, headers, _ = asyncio.run(adapter._prepare(parsed, CLAUDE_45, False))
    assert headers["Authorization"] == "Bearer env-bedrock-key" and "X-Amz-Date" not in headers
    assert str(url).startswith("https://bedrock-runtime.us-west-2.amazonaws.com/")


def test_missing_credentials_is_a_clear_error(aws_env: pytest.MonkeyPatch) -> None:
    adapter = _adapter(region="us-east-1")
    parsed = parse_request(b'{"model": "m", "input": "hi"}')
    with pytest.raises(Exception, match="no AWS credentials found") as info:
        asyncio.run(adapter._prepare(parsed, CLAUDE_45, False))
    assert getattr(info.value, "status", None) == 500


class _RefreshableSource:
    """A refreshable credential source (STS, SSO, IMDS) with botocore's interface, spied on."""

    def __init__(self) -> None:
        self.due = False
        self.frozen_on: list[int] = []  # the thread of each get_frozen_credentials call

    def refresh_needed(self) -> bool:
        return self.due

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        self.frozen_on.append(threading.get_ident())
        self.due = False
        return ReadOnlyCredentials(f"AKIDREFRESHED{len(self.frozen_on)}", "refreshed-secret", "token")


def test_credentials_resolved_once_and_refreshed_off_the_event_loop(aws_env: pytest.MonkeyPatch) -> None:
    """The credential chain is built once, in a worker thread; signing reuses the frozen credentials
    until botocore says they are due, and refreshing them also runs off the event loop."""
    source = _RefreshableSource()
    sessions: list[int] = []

    def fake_session(**_: Any) -> Any:
        sessions.append(threading.get_ident())
        return SimpleNamespace(get_config_variable=lambda name: None, get_credentials=lambda: source)

    aws_env.setattr(bedrock_module, "Session", fake_session)
    adapter = _adapter(region="us-east-1")
    parsed = parse_request(b'{"model": "m", "input": "hi"}')

    async def sign(times: int) -> list[str]:
        keys = []
        for _ in range(times):
            _url, _payload, headers, _plan = await adapter._prepare(parsed, CLAUDE_45, False)
            keys.append(re.search(r"Credential=([^/]+)/", headers["Authorization"]).group(1))  # type: ignore[union-attr]
        return keys

    async def run() -> tuple[int, list[str]]:
        keys = await sign(20)
        source.due = True  # botocore: the credentials expire soon
        return threading.get_ident(), keys + await sign(3)

    loop_thread, keys = asyncio.run(run())
    assert keys == ["AKIDREFRESHED1"] * 20 + ["AKIDREFRESHED2"] * 3
    assert len(sessions) == 1 and sessions[0] != loop_thread, "the chain is built once, off the event loop"
    assert len(source.frozen_on) == 2, "frozen credentials are reused until they are due"
    assert loop_thread not in source.frozen_on, "freezing (maybe an STS/IMDS call) runs off the event loop"


# --- the conversation from the issue: a tool loop with reasoning on -------------------------


WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Current weather for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                               "additionalProperties": False}, "strict": True}
QUESTION = "What is the weather in Paris?"


def _turn(client: openai.OpenAI, streamed: bool, **kwargs: Any) -> Response:
    if streamed:
        with client.responses.stream(**kwargs) as stream:
            for _ in stream:
                pass
            return stream.get_final_response()
    return client.responses.create(**kwargs)


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_tool_loop_with_reasoning(bclient: openai.OpenAI, upstream: ReplayServer, streamed: bool) -> None:
    suffix = "chunks.txt" if streamed else "json"
    common = {"model": "claude-bedrock", "tools": [WEATHER_TOOL], "reasoning": {"effort": "low", "summary": "auto"},
              "include": ["reasoning.encrypted_content"]}
    upstream.enqueue(load(REC / f"tool-loop-reasoning.1.{suffix}", provider="bedrock"))
    turn1 = _turn(bclient, streamed, input=QUESTION, **common)

    assert [i.type for i in turn1.output] == ["reasoning", "message", "function_call"]
    reasoning, message, call = turn1.output
    assert reasoning.summary[0].text == made.THINK_1  # type: ignore[union-attr]
    assert reasoning.encrypted_content.startswith("sluice1.bedrock.")  # type: ignore[union-attr]
    assert message.content[0].text == "Let me check the weather."  # type: ignore[union-attr]
    assert (call.call_id, call.name, json.loads(call.arguments)) == (  # type: ignore[union-attr]
        made.TOOL_ID, "get_weather", {"city": "Paris"})
    assert turn1.status == "completed"
    sent1 = assert_valid_converse(upstream.requests[-1])
    verify_sigv4(upstream.requests[-1], upstream.url)
    assert upstream.requests[-1].path.endswith("/converse-stream" if streamed else "/converse")
    assert sent1["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    assert sent1["inferenceConfig"] == {"maxTokens": 2048 + ANSWER_ROOM}
    assert sent1["toolConfig"] == {"tools": [{"toolSpec": {"name": "get_weather", "description":
                                                           "Current weather for a city.",
                                                           "inputSchema": {"json": WEATHER_TOOL["parameters"]},
                                                           "strict": True}}]}

    upstream.enqueue(load(REC / f"tool-loop-reasoning.2.{suffix}", provider="bedrock"))
    history = [{"role": "user", "content": QUESTION}, *[i.model_dump(exclude_none=True) for i in turn1.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "18°C and sunny"}]
    turn2 = _turn(bclient, streamed, input=history, **common)

    sent2 = assert_valid_converse(upstream.requests[-1])
    assert sent2["messages"] == [
        {"role": "user", "content": [{"text": QUESTION}]},
        {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": made.THINK_1, "signature": made.SIGNATURE_1}}},
            {"text": "Let me check the weather."},
            {"toolUse": {"toolUseId": made.TOOL_ID, "name": "get_weather", "input": {"city": "Paris"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": made.TOOL_ID,
                                                     "content": [{"text": "18°C and sunny"}]}}]},
    ]
    assert sent2["additionalModelRequestFields"]["thinking"]["type"] == "enabled"
    assert turn2.output_text == made.ANSWER_2
    assert [i.type for i in turn2.output] == ["reasoning", "message"]
    assert unseal(turn2.output[0].encrypted_content, "bedrock")["signature"] == made.SIGNATURE_2  # type: ignore[index,union-attr]
    assert turn2.usage.input_tokens == 538 and turn2.usage.input_tokens_details.cached_tokens == 500  # type: ignore[union-attr]
    assert turn2.cost["total"] == pytest.approx((38 * 3 + 500 * 0.3 + 41 * 15) / 1e6)  # type: ignore[attr-defined]


def test_tool_loop_without_encrypted_content(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    """Without include, no state leaves Sluice; the next turn drops thinking rather than fail upstream."""
    upstream.enqueue(load(REC / "tool-loop-reasoning.1.json", provider="bedrock"))
    common = {"model": "claude-bedrock", "tools": [WEATHER_TOOL], "reasoning": {"effort": "medium", "summary": "auto"}}
    turn1 = bclient.responses.create(input=QUESTION, **common)
    reasoning = turn1.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content is None
    assert reasoning.summary[0].text == made.THINK_1  # type: ignore[union-attr]

    upstream.enqueue(load(REC / "tool-loop-reasoning.2.json", provider="bedrock"))
    call = turn1.output[-1]
    history = [{"role": "user", "content": QUESTION}, *[i.model_dump(exclude_none=True) for i in turn1.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "18°C",  # type: ignore[union-attr]
                "is_error": False}]
    bclient.responses.create(input=history, **common)
    sent = assert_valid_converse(upstream.requests[-1])
    assert [list(b) for b in sent["messages"][1]["content"]] == [["text"], ["toolUse"]]
    assert "additionalModelRequestFields" not in sent


def test_reasoning_presentation_and_foreign_state(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    data = load(FIX / "bedrock/vercel-ai/amazon-bedrock-reasoning.json")[0]
    thought = data.json()["output"]["message"]["content"][0]["reasoningContent"]["reasoningText"]["text"]
    # A summary when the client asks for one. Otherwise Claude's thinking (itself a summary) is not shown,
    # other vendors' raw chain of thought is reasoning_text.
    for model, summary in (("claude-bedrock", None), ("claude-bedrock", "auto"),
                           ("replay-bedrock/openai.gpt-oss-120b-1:0", None),
                           ("replay-bedrock/openai.gpt-oss-120b-1:0", "auto")):
        upstream.enqueue(data)
        reasoning = {"effort": "high", **({"summary": summary} if summary else {})}
        output = bclient.responses.create(model=model, input="r's?", reasoning=reasoning).output  # type: ignore[arg-type]
        if model == "claude-bedrock" and summary is None:
            assert [item.type for item in output] == ["message"]
            continue
        item = output[0]
        assert [p.text for p in item.summary] == ([thought] if summary else [])  # type: ignore[union-attr]
        assert [p.text for p in item.content or []] == ([] if summary else [thought])  # type: ignore[union-attr]
    # State sealed for another protocol, or for another Bedrock vendor, is never sent to this one.
    upstream.enqueue(load(FIX / "bedrock/vercel-ai/amazon-bedrock-text.json"))
    history = [{"role": "user", "content": "hi"},
               {"type": "reasoning", "summary": [], "encrypted_content": seal("anthropic", {"signature": "x"})},
               {"type": "reasoning", "summary": [], "encrypted_content": seal("bedrock", {
                   "f": "openai", "text": "t", "signature": "s"})},
               {"type": "reasoning", "summary": [], "encrypted_content": "gAAAAopaque-openai-state"},
               {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}]
    bclient.responses.create(model="claude-bedrock", input=history)
    sent = assert_valid_converse(upstream.requests[-1])
    assert sent["messages"][1] == {"role": "assistant", "content": [{"text": "hello"}]}


# --- structured output ---------------------------------------------------------------------------


class CityLocation(pydantic.BaseModel):
    city: str
    country: str


def test_parse_native_structured_output(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(REC / "structured-output.json", provider="bedrock"))
    parsed = bclient.responses.parse(model="claude-bedrock", input="Largest city in Mexico?", text_format=CityLocation)
    assert parsed.output_parsed == CityLocation(city="Mexico City", country="Mexico")
    sent = assert_valid_converse(upstream.requests[-1])
    fmt = sent["outputConfig"]["textFormat"]
    assert fmt["type"] == "json_schema" and fmt["structure"]["jsonSchema"]["name"] == "CityLocation"
    schema = json.loads(fmt["structure"]["jsonSchema"]["schema"])  # Converse takes the schema as a JSON string
    assert schema["properties"] == {"city": {"title": "City", "type": "string"},
                                    "country": {"title": "Country", "type": "string"}}
    assert "toolConfig" not in sent


def test_parse_with_tool_emulation(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    answer = {"output": {"message": {"role": "assistant", "content": [
        {"text": "Here is the JSON."},
        {"toolUse": {"toolUseId": "tooluse_x", "name": "CityLocation",
                     "input": {"city": "Mexico City", "country": "Mexico"}}}]}},
        "stopReason": "tool_use", "usage": {"inputTokens": 200, "outputTokens": 30, "totalTokens": 230}}
    upstream.enqueue(json_exchange(answer))
    parsed = bclient.responses.parse(model="claude-bedrock-tooljson", input="Largest city in Mexico?",
                                     text_format=CityLocation)
    assert parsed.output_parsed == CityLocation(city="Mexico City", country="Mexico")
    assert [i.type for i in parsed.output] == ["message"]
    sent = assert_valid_converse(upstream.requests[-1])
    assert sent["toolConfig"]["toolChoice"] == {"tool": {"name": "CityLocation"}}
    assert "outputConfig" not in sent
    # Claude cannot think while a tool is forced: with reasoning asked for, the answer tool stays
    # forced and thinking is left off (the format is the client's contract), as on Anthropic.
    upstream.enqueue(json_exchange(answer))
    parsed = bclient.responses.parse(model="claude-bedrock-tooljson", input="Largest city in Mexico?",
                                     text_format=CityLocation, reasoning={"effort": "low"})
    assert parsed.output_parsed == CityLocation(city="Mexico City", country="Mexico")
    sent = assert_valid_converse(upstream.requests[-1])
    assert sent["toolConfig"]["toolChoice"] == {"tool": {"name": "CityLocation"}}
    assert "additionalModelRequestFields" not in sent


# --- the request mapping ------------------------------------------------------------------------

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
PDF = base64.b64encode(b"%PDF-1.4 fake").decode()


def test_request_mapping(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "bedrock/vercel-ai/amazon-bedrock-text.json"))
    bclient.responses.create(
        model="claude-bedrock",
        instructions="Be brief.",
        input=[
            {"role": "developer", "content": "Use metric units.", "cache_control": {"type": "ephemeral"}},
            {"role": "user", "content": [
                {"type": "input_text", "text": "Describe these."},
                {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
                {"type": "input_file", "filename": "q3_report.final.pdf",
                 "file_data": f"data:application/pdf;base64,{PDF}"},
                {"type": "input_file", "filename": "notes.md", "file_data": PDF},
            ], "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            {"role": "user", "content": "And the weather?"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
            {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": ""},
            {"type": "function_call_output", "call_id": "c1", "output": "boom", "is_error": True},
            {"type": "function_call_output", "call_id": "c2", "output": [
                {"type": "input_text", "text": "see image"},
                {"type": "input_image", "image_url": f"data:image/jpeg;base64,{PNG}"}]},
        ],
        tools=[WEATHER_TOOL, {**WEATHER_TOOL, "name": "get_time", "cache_control": {"type": "ephemeral"}}],  # type: ignore[list-item]
        tool_choice="required",
        temperature=1.7,
        top_p=0.9,
        max_output_tokens=500,
        parallel_tool_calls=False,
        metadata={"k": "v"},
        extra_body={"cache_control": {"type": "ephemeral"}},
    )
    sent = assert_valid_converse(upstream.requests[-1])
    # The 1h point on the user message upgrades the points before it (tools, system): prefix order.
    hour = {"cachePoint": {"type": "default", "ttl": "1h"}}
    assert sent["system"] == [{"text": "Be brief."}, {"text": "Use metric units."}, hour]
    assert sent["messages"] == [
        {"role": "user", "content": [
            {"text": "Describe these."},
            {"image": {"format": "png", "source": {"bytes": PNG}}},
            {"document": {"format": "pdf", "name": "q3 report final", "source": {"bytes": PDF}}},
            {"document": {"format": "md", "name": "notes", "source": {"bytes": PDF}}},
            {"cachePoint": {"type": "default", "ttl": "1h"}},
            {"text": "And the weather?"}]},
        {"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "c1", "name": "get_weather", "input": {"city": "Oslo"}}},
            {"toolUse": {"toolUseId": "c2", "name": "get_weather", "input": {}}}]},
        {"role": "user", "content": [
            {"toolResult": {"toolUseId": "c1", "content": [{"text": "boom"}], "status": "error"}},
            {"toolResult": {"toolUseId": "c2", "content": [
                {"text": "see image"}, {"image": {"format": "jpeg", "source": {"bytes": PNG}}}]}},
            {"cachePoint": {"type": "default"}}]},  # the request-level cache_control: after the last block
    ]
    # Clamped to Converse's 0-1; newer Claude models reject temperature with top_p: temperature wins.
    assert sent["inferenceConfig"] == {"maxTokens": 500, "temperature": 1.0}
    tools = sent["toolConfig"]["tools"]
    assert [list(t) for t in tools] == [["toolSpec"], ["toolSpec"], ["cachePoint"]] and tools[2] == hour
    assert tools[0]["toolSpec"]["strict"] is True  # the client's strict: true, on a Claude model that takes it
    assert sent["toolConfig"]["toolChoice"] == {"any": {}}
    assert set(sent) == {"messages", "system", "inferenceConfig", "toolConfig"}


def test_cache_point_limit() -> None:
    """Bedrock takes at most 4 cache points: the first and the latest stay."""
    items = [{"role": "user", "content": f"part {i}", "cache_control": {"type": "ephemeral"}} for i in range(6)]
    body = _body({"input": items, "instructions": "sys", "cache_control": {"type": "ephemeral"}})
    content = body["messages"][0]["content"]
    # Six points (the request-level one coincides with part 5's): the first and the latest three stay.
    assert [b.get("text", "*") for b in content] == ["part 0", "*", "part 1", "part 2", "part 3", "*", "part 4",
                                                     "*", "part 5", "*"]
    body = _body({"input": items[:1], "tools": [{**WEATHER_TOOL, "cache_control": {"type": "ephemeral"}}]})
    assert body["toolConfig"]["tools"][1] == {"cachePoint": {"type": "default"}}


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "name": "get_weather"}, {"tool": {"name": "get_weather"}}),
        ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]},
         {"any": {}}),
        ("none", None),
    ],
)
def test_tool_choice(bclient: openai.OpenAI, upstream: ReplayServer, tool_choice: Any, expected: Any) -> None:
    upstream.enqueue(load(FIX / "bedrock/vercel-ai/amazon-bedrock-text.json"))
    tools = [WEATHER_TOOL, {**WEATHER_TOOL, "name": "get_time"}]
    bclient.responses.create(model="claude-bedrock", input="hi", tools=tools, tool_choice=tool_choice)  # type: ignore[arg-type]
    sent = assert_valid_converse(upstream.requests[-1])
    if expected is None:
        assert "toolConfig" not in sent
        return
    assert sent["toolConfig"]["toolChoice"] == expected
    names = [t["toolSpec"]["name"] for t in sent["toolConfig"]["tools"]]
    assert names == (["get_time"] if isinstance(tool_choice, dict) and tool_choice["type"] == "allowed_tools"
                     else ["get_weather", "get_time"])


def test_tool_choice_none_with_tool_history_keeps_tool_config(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "bedrock/vercel-ai/amazon-bedrock-text.json"))
    history = [{"role": "user", "content": "weather?"},
               {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
               {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]
    bclient.responses.create(model="claude-bedrock", input=history, tools=[WEATHER_TOOL], tool_choice="none")  # type: ignore[arg-type]
    sent = assert_valid_converse(upstream.requests[-1])
    assert sent["toolConfig"] == {"tools": [{"toolSpec": {"name": "get_weather",
                                                          "description": "Current weather for a city.",
                                                          "inputSchema": {"json": WEATHER_TOOL["parameters"]},
                                                          "strict": True}}]}


def _body(request: dict[str, Any], model: str = CLAUDE_45, options: dict[str, Any] | None = None) -> dict[str, Any]:
    parsed = parse_request(json.dumps({"model": "m", "input": "hi", **request}).encode())
    return build_body(parsed, model, options or {})[0]


@pytest.mark.parametrize(
    ("model", "request_", "options", "expected"),
    [
        (CLAUDE_45, {"reasoning": {"effort": "high"}}, {},
         ({"thinking": {"type": "enabled", "budget_tokens": 16384}}, {"maxTokens": 16384 + ANSWER_ROOM})),
        (CLAUDE_45, {"reasoning": {"effort": "high"}, "max_output_tokens": 4000}, {},
         ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, {"maxTokens": 4000})),
        (CLAUDE_45, {"reasoning": {"effort": "low"}, "max_output_tokens": 1000}, {}, (None, {"maxTokens": 1000})),
        (CLAUDE_45, {"reasoning": {"effort": "none"}}, {}, (None, None)),
        (CLAUDE_45, {"reasoning": {"effort": "low"}}, {"thinking_budgets": {"low": 3000}},
         ({"thinking": {"type": "enabled", "budget_tokens": 3000}}, {"maxTokens": 3000 + ANSWER_ROOM})),
        ("global.anthropic.claude-opus-4-6-v1", {"reasoning": {"effort": "xhigh"}}, {"reasoning": "adaptive"},
         ({"thinking": {"type": "adaptive"}}, None)),
        ("us.amazon.nova-2-lite-v1:0", {"reasoning": {"effort": "minimal"}}, {},
         ({"reasoningConfig": {"type": "enabled", "maxReasoningEffort": "low"}}, None)),
        ("openai.gpt-oss-120b-1:0", {"reasoning": {"effort": "high"}}, {}, ({"reasoning_effort": "high"}, None)),
        ("us.meta.llama4-maverick-17b-instruct-v1:0", {"reasoning": {"effort": "high"}}, {}, (None, None)),
        (CLAUDE_45, {"reasoning": {"effort": "high"}, "tools": [WEATHER_TOOL], "tool_choice": "required"}, {},
         (None, None)),
        (CLAUDE_45, {"reasoning": {"effort": "low"}}, {"additional_model_request_fields": {"top_k": 5}},
         ({"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 2048}},
          {"maxTokens": 2048 + ANSWER_ROOM})),
    ],
)
def test_reasoning_mapping(model: str, request_: dict[str, Any], options: dict[str, Any], expected: Any) -> None:
    body = _body(request_, model, options)
    fields, inference = expected
    assert body.get("additionalModelRequestFields") == fields
    assert body.get("inferenceConfig") == inference
    if options.get("reasoning") == "adaptive":
        assert body["outputConfig"] == {"effort": "xhigh"}


def test_conversation_shape() -> None:
    long_id = "call/" + "x" * 80
    body = _body({"input": [
        {"role": "assistant", "content": "Earlier answer."},
        {"type": "function_call", "call_id": "toolu_01:a.b", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": long_id, "name": "f", "arguments": "{}"},
        {"role": "user", "content": "Note first."},
        {"type": "function_call_output", "call_id": "toolu_01:a.b", "output": "1"},
        {"type": "function_call_output", "call_id": long_id, "output": "2"},
    ]})
    mapped = "call_" + hashlib.sha256(long_id.encode()).hexdigest()[:40]
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "(continue)"}]},  # Converse opens with a user turn
        {"role": "assistant", "content": [{"text": "Earlier answer."},
                                          {"toolUse": {"toolUseId": "toolu_01:a.b", "name": "f", "input": {}}},
                                          {"toolUse": {"toolUseId": mapped, "name": "f", "input": {}}}]},
        # Tool results open the user turn, even when the client put a message before them.
        {"role": "user", "content": [{"toolResult": {"toolUseId": "toolu_01:a.b", "content": [{"text": "1"}]}},
                                     {"toolResult": {"toolUseId": mapped, "content": [{"text": "2"}]}},
                                     {"text": "Note first."}]},
    ]


def test_sampling_parameters() -> None:
    both = {"temperature": 0.3, "top_p": 0.8}
    assert _body(both, "us.amazon.nova-micro-v1:0")["inferenceConfig"] == {"temperature": 0.3, "topP": 0.8}
    assert _body(both)["inferenceConfig"] == {"temperature": 0.3}
    assert _body({"top_p": 0.8})["inferenceConfig"] == {"topP": 0.8}
    # Claude rejects sampling parameters while thinking.
    assert _body({**both, "reasoning": {"effort": "low"}})["inferenceConfig"] == {
        "maxTokens": 2048 + ANSWER_ROOM}
    assert _body({"text": {"format": {"type": "json_object"}}})["system"] == [
        {"text": "Respond with a single valid JSON object and nothing else."}]


def test_model_family() -> None:
    assert model_family(CLAUDE_45) == "anthropic"
    assert model_family("anthropic.claude-3-haiku-20240307-v1:0") == "anthropic"
    assert model_family("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0") == "amazon"
    assert model_family("us-gov.meta.llama3-8b-instruct-v1:0") == "meta"
    assert model_family("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc") == ""


def test_usage_mapping() -> None:
    assert usage({"inputTokens": 2, "outputTokens": 5, "totalTokens": 1329, "cacheReadInputTokens": 0,
                  "cacheWriteInputTokens": 1322}) == {
        "input_tokens": 1324, "input_tokens_details": {"cached_tokens": 0, "cached_tokens_created": 1322,
                                                        "cache_write_1h_tokens": 0},
        "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1329}
    assert usage(None) is None


@pytest.mark.parametrize(
    ("stop", "status", "reason"),
    [("end_turn", "completed", None), ("tool_use", "completed", None), ("stop_sequence", "completed", None),
     ("max_tokens", "incomplete", "max_output_tokens"),
     ("model_context_window_exceeded", "incomplete", "max_output_tokens"),
     ("guardrail_intervened", "incomplete", "content_filter"), ("content_filtered", "incomplete", "content_filter")],
)
def test_stop_reasons(stop: str, status: str, reason: str | None) -> None:
    from sluice.providers.bedrock_request import Plan

    translator = ConverseTranslator(Plan(family="anthropic", seal=False, summary=False))
    translator.message([{"text": "partial"}])
    translator.stop_reason = stop
    result = translator.finish()[-1]["response"]
    assert result["status"] == status
    assert result.get("incomplete_details") == ({"reason": reason} if reason else None)
    assert result["output"][0]["status"] == status


def test_redacted_reasoning_in_pieces() -> None:
    from sluice.providers.bedrock_request import Plan

    translator = ConverseTranslator(Plan(family="anthropic", seal=True, summary=True))
    data = b"opaque redacted thinking bytes"
    for piece in (data[:7], data[7:]):
        translator.feed("contentBlockDelta", {"contentBlockIndex": 0, "delta": {
            "reasoningContent": {"redactedContent": base64.b64encode(piece).decode()}}})
    translator.feed("contentBlockStop", {"contentBlockIndex": 0})
    translator.feed("messageStop", {"stopReason": "end_turn"})
    item = translator.finish()[-1]["response"]["output"][0]
    assert unseal(item["encrypted_content"], "bedrock") == {"f": "anthropic",
                                                           "redacted": base64.b64encode(data).decode()}
    assert item["summary"] == []


def test_guardrail_intervened(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(REC / "guardrail-intervened.json", provider="bedrock"))
    response = bclient.responses.create(model="nova-guarded", input="something blocked")
    assert response.status == "incomplete" and response.incomplete_details.reason == "content_filter"  # type: ignore[union-attr]
    assert response.output_text == "Sorry, the model cannot answer this question."
    assert assert_valid_converse(upstream.requests[-1])["guardrailConfig"] == {
        "guardrailIdentifier": "xbgw7g293v7o", "guardrailVersion": "DRAFT", "trace": "enabled"}


# --- what Converse cannot carry -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        ({"tool_choice": {"type": "web_search_preview"}, "tools": [WEATHER_TOOL]}, "tool_choice"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "x"}, {
            "type": "input_image", "image_url": "https://example.com/cat.png"}]}]}, "input[0].content[1].image_url"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-123"}]}]},
         "input[0].content[0].file_id"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/tiff;base64,AA"}]}]},
         "input[0].content[0].image_url"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x.test/a.pdf"}]}]},
         "input[0].content[0].file_url"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_data": "AAAA", "filename": "a.exe"}]}]},
         "input[0].content[0].file_data"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": [
            {"type": "input_image", "image_url": "http://x.test/i.png"}]}]}, "input[0].output[0].image_url"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1, 2]"}]},
         "input[0].arguments"),
    ],
)
def test_rejected_before_calling_upstream(gw: Any, upstream: ReplayServer, request_: dict[str, Any],
                                          param: str) -> None:
    resp = post_raw(gw, {"model": "claude-bedrock", "input": "hi", **request_})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    assert not upstream.requests


def test_s3_sources(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "bedrock/vercel-ai/amazon-bedrock-text.json"))
    bclient.responses.create(model="claude-bedrock", input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": "s3://bucket/pics/cat.JPG"},
        {"type": "input_file", "file_url": "s3://bucket/docs/spec.pdf"}]}])
    sent = assert_valid_converse(upstream.requests[-1])
    assert sent["messages"][0]["content"] == [
        {"image": {"format": "jpeg", "source": {"s3Location": {"uri": "s3://bucket/pics/cat.JPG"}}}},
        {"document": {"format": "pdf", "name": "spec", "source": {"s3Location": {"uri": "s3://bucket/docs/spec.pdf"}}}}]


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "code", "message"),
    [
        ("error-throttling.yaml", 429, "rate_limit_exceeded", "Too many requests"),
        # Bedrock refusing Sluice's credentials or not knowing the model: the gateway's problem (424),
        # never the client's 403/404.
        ("error-access-denied.yaml", 424, "access_denied", "You don't have access"),
        ("error-resource-not-found.yaml", 424, "model_not_found", "Model not found."),
        ("error-service-unavailable.yaml", 424, "service_unavailable", "unable to process"),
        ("error-model-not-ready.yaml", 424, "model_not_ready", "not ready"),
    ],
)
def test_http_errors(gw: Any, upstream: ReplayServer, name: str, status: int, code: str, message: str) -> None:
    upstream.enqueue(load(REC / name, provider="bedrock"))
    resp = post_raw(gw, {"model": "claude-bedrock", "input": "hi"})
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert message in error["message"] and error["code"] == code
    if status == 429:
        assert resp.headers["retry-after"] == "1"
        assert "ThrottlingException" in error["message"]


def test_sdk_error_classes(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(REC / "error-throttling.yaml", provider="bedrock"))
    with pytest.raises(openai.RateLimitError):
        bclient.responses.create(model="claude-bedrock", input="hi")
    upstream.enqueue(load(FIX / "bedrock/pydantic-ai/test_bedrock_error.yaml"))
    with pytest.raises(openai.BadRequestError, match="The provided model identifier is invalid"):
        bclient.responses.create(model="claude-bedrock", input="hi")


def test_retryable_errors_fail_over(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    for name in ("error-throttling.yaml", "error-model-not-ready.yaml", "error-service-unavailable.yaml"):
        upstream.reset()
        upstream.enqueue(load(REC / name, provider="bedrock"))
        upstream.enqueue(load(FIX / "bedrock/vercel-ai/amazon-bedrock-text.json"))
        response = bclient.responses.create(model="claude-failover", input="hi")
        assert response.status == "completed" and response.model == f"replay-bedrock-key/{CLAUDE_45}"
        assert upstream.requests[0].headers["authorization"].startswith("AWS4-HMAC-SHA256")
        assert upstream.requests[1].headers["authorization"] == "Bearer test-bedrock-api-key"


def test_unreachable_endpoint_fails_over(bclient: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "bedrock/vercel-ai/amazon-bedrock-text.json"))
    response = bclient.responses.create(model="claude-dead-then-live", input="hi")
    assert response.model == f"replay-bedrock/{CLAUDE_45}"


def test_stream_exception_before_content_fails_over(gw: Any, upstream: ReplayServer) -> None:
    upstream.enqueue(load(REC / "stream-exception-first.yaml", provider="bedrock"))
    upstream.enqueue(load(FIX / "bedrock/vercel-ai/amazon-bedrock-text.chunks.txt"))
    events = stream_raw(gw, {"model": "claude-failover", "input": "hi"})
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["model"] == f"replay-bedrock-key/{CLAUDE_45}"
    assert len(upstream.requests) == 2


def test_stream_exception_before_content_single_route(gw: Any, upstream: ReplayServer) -> None:
    upstream.enqueue(load(REC / "stream-exception-first.yaml", provider="bedrock"))
    resp = post_raw(gw, {"model": "claude-bedrock", "input": "hi", "stream": True})
    assert resp.status_code == 424
    assert "ServiceUnavailableException: Bedrock is unable" in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    ("name", "code"),
    [("stream-throttling-midstream.yaml", "rate_limit_exceeded"), ("stream-model-error.yaml", "server_error")],
)
def test_stream_exception_mid_stream(gw: Any, upstream: ReplayServer, name: str, code: str) -> None:
    upstream.enqueue(load(REC / name, provider="bedrock"))
    events = stream_raw(gw, {"model": "claude-bedrock", "input": "hi"})
    kinds = [e["type"] for e in events]
    assert "response.output_text.delta" in kinds
    assert kinds[-2:] == ["error", "response.failed"]
    assert events[-2]["code"] == code and "Exception: " in events[-2]["message"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas in ("The capital of France", "Partial")


def test_stream_cut_short_fails(gw: Any, upstream: ReplayServer) -> None:
    exchange = load(FIX / "bedrock/pydantic-ai/test_bedrock_model_stream.yaml")[0]
    upstream.enqueue(exchange, fail_after_events=len(exchange.frames()) - 3)  # before messageStop
    events = stream_raw(gw, {"model": "nova-micro-bedrock", "input": "hi"})
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]


def test_redacted_secret_never_returned(gw: Any, upstream: ReplayServer) -> None:
    leaky = {"message": "signature mismatch for test-secret and test-bedrock-api-key"}
    upstream.enqueue(json_exchange(leaky, 403, {"x-amzn-errortype": "InvalidSignatureException"}))
    resp = post_raw(gw, {"model": "claude-bedrock", "input": "hi"})
    assert resp.status_code == 424  # Sluice's AWS signature was refused: not the client's fault
    assert resp.json()["error"]["code"] == "access_denied"
    assert "test-secret" not in resp.text


def test_recording_provenance_is_documented() -> None:
    provenance = (REC / "PROVENANCE.md").read_text()
    for path in REC.iterdir():
        if path.name != "PROVENANCE.md":
            assert path.name in provenance, path.name
