"""Fidelity of the two Claude adapters (Anthropic Messages and Bedrock Converse), one group per item:

2. structured output through the forced tool (`structured_output: tool`): a text preamble before the
   tool call is dropped, so `output_text` is the JSON and `responses.parse` works, streamed or not;
5. cache TTLs: breakpoints past four keep their TTLs (only those before a 1h one become 1h); 1h cache
   writes are counted (`input_tokens_details.cache_write_1h_tokens`) and priced (`cache_write_1h`);
6. Bedrock: part-level `cache_control` becomes a `cachePoint` after that part's block;
8. function tools' `strict` reaches Claude (explicit `strict: true`, on models that take it);
10. `user` -> Anthropic `metadata.user_id` (Bedrock: no equivalent, not sent);
11. reasoning: the thinking text is a summary only when `reasoning.summary` asks for one, and
    `reasoning_tokens` is estimated from the thinking text when the upstream gives no count.

The gateway is driven with the official `openai` SDK; what reaches Anthropic is checked against its
OpenAPI schema and what reaches Bedrock against the Converse service model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import openai
import pydantic
import pytest
import yaml

from sluice.accounting.cost import response_cost
from sluice.canonical.reasoning import unseal
from sluice.canonical.request import parse_request
from sluice.canonical.response import normalize_usage
from sluice.config import Price, parse_config
from sluice.providers import anthropic_request, bedrock_request, claude_policy
from sluice.providers.anthropic import MessageTranslator
from tests import bedrock_make_recordings as made
from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.replay import Exchange, ReplayServer, fixtures_root, load
from tests.test_provider_anthropic import accumulate, create, stream
from tests.test_provider_anthropic import json_exchange as anthropic_json
from tests.test_provider_anthropic import sent as anthropic_sent
from tests.test_provider_bedrock import CLAUDE_45, assert_valid_converse, stream_raw, validate_response
from tests.test_provider_bedrock import json_exchange as bedrock_json

ANTHROPIC_REC = Path(__file__).parent / "recordings" / "anthropic"
BEDROCK_REC = Path(__file__).parent / "recordings" / "bedrock"
CATALOG = Path(__file__).parent.parent / "src" / "sluice" / "routing" / "builtin_catalog.yaml"
CAPS = "[tools, parallel_tool_calls, images, files, json_schema, reasoning, prompt_caching, temperature]"
CLAUDE_4 = "us.anthropic.claude-sonnet-4-20250514-v1:0"  # Claude Sonnet 4: no strict tools
NOVA = "us.amazon.nova-micro-v1:0"
EPH = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
POINT = {"cachePoint": {"type": "default"}}
HOUR_POINT = {"cachePoint": {"type": "default", "ttl": "1h"}}

_PROVIDERS = """
providers:
  claude:
    type: anthropic
    base_url: {upstream}
    api_key: sk-ant-test
  claude-json-tool:
    type: anthropic
    base_url: {upstream}
    api_key: sk-ant-test
    options: {{structured_output: tool}}
  claude-no-strict:
    type: anthropic
    base_url: {upstream}
    api_key: sk-ant-test
    options: {{strict_tools: false}}
  bedrock:
    type: bedrock
    base_url: {upstream}
    region: us-east-1
    aws_access_key_id: AKIDTEST
    aws_secret_access_key: test-secret
  bedrock-json-tool:
    type: bedrock
    base_url: {upstream}
    region: us-east-1
    aws_access_key_id: AKIDTEST
    aws_secret_access_key: test-secret
    options: {{structured_output: tool}}
"""
CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
""" + _PROVIDERS + """
models:
  claude:
    capabilities: {caps}
    routes: [{{provider: claude, model: claude-sonnet-4-5}}]
  claude-json-tool:
    capabilities: {caps}
    routes: [{{provider: claude-json-tool, model: claude-haiku-4-5}}]
  claude-3-5:
    capabilities: {caps}
    routes: [{{provider: claude, model: claude-3-5-haiku-20241022}}]
  claude-no-strict:
    capabilities: {caps}
    routes: [{{provider: claude-no-strict, model: claude-sonnet-4-5}}]
  claude-bedrock:
    capabilities: {caps}
    routes: [{{provider: bedrock, model: "{claude45}"}}]
  claude-bedrock-json-tool:
    capabilities: {caps}
    routes: [{{provider: bedrock-json-tool, model: "{claude45}"}}]
  claude-4-bedrock:
    capabilities: {caps}
    routes: [{{provider: bedrock, model: "{claude4}"}}]
  nova-bedrock:
    capabilities: [tools, temperature, prompt_caching]
    routes: [{{provider: bedrock, model: "{nova}"}}]
"""
# Routes priced with a 1h cache-write rate (a key older configs lack, so a gateway of its own).
PRICE = {"input": 3.0, "cached_input": 0.3, "cache_write": 3.75, "cache_write_1h": 6.0, "output": 15.0}
PRICED_CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
""" + _PROVIDERS + """
models:
  claude-priced:
    routes: [{{provider: claude, model: claude-sonnet-4-5, price: {price}}}]
  claude-bedrock-priced:
    routes: [{{provider: bedrock, model: "{claude45}", price: {price}}}]
"""


@pytest.fixture(scope="module")
def gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = Path(tmp_path_factory.mktemp("claude-fidelity-db")) / "sluice.db"
    text = CONFIG.format(db=db, master=MASTER_KEY, upstream=upstream.url, caps=CAPS, claude45=CLAUDE_45,
                         claude4=CLAUDE_4, nova=NOVA)
    with running_gateway(text) as running:
        yield running


@pytest.fixture(scope="module")
def priced_gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = Path(tmp_path_factory.mktemp("claude-priced-db")) / "sluice.db"
    price = "{" + ", ".join(f"{k}: {v}" for k, v in PRICE.items()) + "}"
    text = PRICED_CONFIG.format(db=db, master=MASTER_KEY, upstream=upstream.url, claude45=CLAUDE_45, price=price)
    with running_gateway(text) as running:
        yield running


@pytest.fixture
def oai(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)


@pytest.fixture
def priced(priced_gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{priced_gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)


def _anthropic_body(request: dict[str, Any], model: str = "claude-sonnet-4-5",
                    options: dict[str, Any] | None = None) -> dict[str, Any]:
    parsed = parse_request(json.dumps({"model": "m", "input": "hi", **request}).encode())
    return anthropic_request.build_body(parsed, model, False, options or {})[0]


def _bedrock_body(request: dict[str, Any], model: str = CLAUDE_45,
                  options: dict[str, Any] | None = None) -> dict[str, Any]:
    parsed = parse_request(json.dumps({"model": "m", "input": "hi", **request}).encode())
    return bedrock_request.build_body(parsed, model, options or {})[0]


def _sse(events: list[dict[str, Any]]) -> Exchange:
    body = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
    return Exchange("POST", "/v1/messages", None, 200, {"content-type": "text/event-stream"}, body, True,
                    "made-in-test")


def _message(content: list[dict[str, Any]], stop_reason: str = "end_turn", **usage: Any) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 30, **usage}}


def _as_stream(message: dict[str, Any]) -> Exchange:
    """The SSE stream that delivers this whole message (text, tool_use, thinking blocks)."""
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {
        **message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}}]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {"type": "text", "text": ""}})
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": block["text"]}})
        elif kind == "tool_use":
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {**block, "input": {}}})
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
        elif kind == "thinking":
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "thinking_delta", "thinking": block["thinking"]}})
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "signature_delta", "signature": block["signature"]}})
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                   "usage": message["usage"]})
    events.append({"type": "message_stop"})
    return _sse(events)


# --- 2. structured output through the forced tool: the preamble --------------------------------------


class Weather(pydantic.BaseModel):
    city: str
    temp_c: int


PREAMBLE = "I'll provide the weather in the requested format."
WEATHER_FORMAT = {"format": {"type": "json_schema", "name": "Weather", "schema": Weather.model_json_schema()}}


def _preamble_recording() -> Exchange:
    return load(ANTHROPIC_REC / "json-tool-preamble.sse", provider="anthropic")[0]


def test_anthropic_json_tool_preamble_dropped_parse(oai: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(anthropic_json(accumulate(_preamble_recording())))
    parsed = oai.responses.parse(model="claude-json-tool", input="Weather in Paris?", text_format=Weather)
    assert parsed.output_parsed == Weather(city="Paris", temp_c=18)
    assert json.loads(parsed.output_text) == {"city": "Paris", "temp_c": 18}
    assert [item.type for item in parsed.output] == ["message"]
    assert len(parsed.output[0].content) == 1  # type: ignore[union-attr]
    body = anthropic_sent(upstream)
    assert body["tool_choice"] == {"type": "tool", "name": "Weather"}


def test_anthropic_json_tool_preamble_dropped_stream(oai: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(_preamble_recording())
    with oai.responses.stream(model="claude-json-tool", input="Weather in Paris?", text_format=Weather) as events:
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        final = events.get_final_response()
    assert final.output_parsed == Weather(city="Paris", temp_c=18)
    assert "".join(deltas) == final.output_text  # the preamble never reached the client, not even as a delta
    assert PREAMBLE not in final.output_text
    # And the stream's final response is the non-streaming one.
    upstream.enqueue(_preamble_recording())
    streamed, _ = stream(oai, model="claude-json-tool", input="Weather in Paris?", text=WEATHER_FORMAT)
    upstream.enqueue(anthropic_json(accumulate(_preamble_recording())))
    plain, _ = create(oai, model="claude-json-tool", input="Weather in Paris?", text=WEATHER_FORMAT)
    assert json.loads(streamed.output_text) == json.loads(plain.output_text) == {"city": "Paris", "temp_c": 18}
    assert [item.type for item in streamed.output] == [item.type for item in plain.output] == ["message"]


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_anthropic_json_tool_not_called_keeps_the_text(oai: openai.OpenAI, upstream: ReplayServer,
                                                       streamed: bool) -> None:
    # Without the answer tool the text is the answer: held back, then given whole at the end.
    message = _message([{"type": "text", "text": "I cannot tell the weather."}])
    upstream.enqueue(_as_stream(message) if streamed else anthropic_json(message))
    call = stream if streamed else create
    response, _ = call(oai, model="claude-json-tool", input="Weather?", text=WEATHER_FORMAT)
    assert response.output_text == "I cannot tell the weather."
    assert response.status == "completed"


def test_anthropic_json_tool_preamble_with_a_function_call() -> None:
    # The model called a function instead of the answer tool: its text is not preamble and is kept.
    plan = anthropic_request.Plan(json_tool="Weather")
    message = _message([{"type": "text", "text": "Let me look that up."},
                        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "Paris"}}], "tool_use")
    result = MessageTranslator(plan).message(message)
    assert [item["type"] for item in result["output"]] == ["function_call", "message"]
    assert result["output"][1]["content"][0]["text"] == "Let me look that up."


def test_bedrock_json_tool_preamble_dropped(oai: openai.OpenAI, upstream: ReplayServer) -> None:
    # The Bedrock translator holds the preamble with the same shared rule.
    answer = made._converse([{"text": PREAMBLE}, {"toolUse": {"toolUseId": "tooluse_1", "name": "Weather",
                                                              "input": {"city": "Paris", "temp_c": 18}}}],
                            "tool_use", {"inputTokens": 20, "outputTokens": 30, "totalTokens": 50})
    upstream.enqueue(bedrock_json(answer))
    parsed = oai.responses.parse(model="claude-bedrock-json-tool", input="Weather?", text_format=Weather)
    assert parsed.output_parsed == Weather(city="Paris", temp_c=18)
    assert PREAMBLE not in parsed.output_text


# --- 5. cache TTLs and 1h cache writes ------------------------------------------------------------------


def _turns(*ttls: str | None) -> list[dict[str, Any]]:
    turns = []
    for i, ttl in enumerate(ttls):
        cache = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
        turns.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}", "cache_control": cache})
    return turns


def _anthropic_ttls(body: dict[str, Any]) -> list[str]:
    marks = [t["cache_control"] for t in body.get("tools", ()) if "cache_control" in t]
    marks += [b["cache_control"] for b in body.get("system", ()) if "cache_control" in b]
    marks += [b["cache_control"] for m in body["messages"] for b in m["content"] if "cache_control" in b]
    return [mark.get("ttl", "5m") for mark in marks]


def _bedrock_ttls(body: dict[str, Any]) -> list[str]:
    blocks = [*body.get("toolConfig", {}).get("tools", ()), *body.get("system", ()),
              *(b for m in body["messages"] for b in m["content"])]
    return [b["cachePoint"].get("ttl", "5m") for b in blocks if "cachePoint" in b]


@pytest.mark.parametrize(("ttls", "expected"), [
    # Past four: the first and the latest three stay; only those before the last 1h become 1h.
    ((None, None, None, "1h", None, None), ["1h", "1h", "5m", "5m"]),
    ((None, None, None, None, "1h", None), ["1h", "1h", "1h", "5m"]),
    # The 1h one was among those dropped: every kept TTL stays as sent.
    ((None, "1h", None, None, None, None), ["5m", "5m", "5m", "5m"]),
    ((None, None, None, None, None, None, None), ["5m", "5m", "5m", "5m"]),
])
def test_breakpoints_past_four_keep_their_ttls(ttls: tuple[str | None, ...], expected: list[str]) -> None:
    request = {"input": _turns(*ttls)}
    assert _anthropic_ttls(_anthropic_body(request)) == expected
    assert _bedrock_ttls(_bedrock_body(request)) == expected


def test_breakpoints_past_four_with_tools_and_system() -> None:
    request = {"tools": [{"type": "function", "name": "f", "cache_control": EPH}],
               "input": [{"role": "system", "content": "rules", "cache_control": EPH}, *_turns(None, "1h", None, None)]}
    # Six asked for: the tool (first) and the three latest messages stay; the 1h message upgrades the
    # tool's breakpoint before it, the two after it stay 5m.
    assert _anthropic_ttls(_anthropic_body(request)) == ["1h", "1h", "5m", "5m"]
    assert _bedrock_ttls(_bedrock_body(request)) == ["1h", "1h", "5m", "5m"]


def _one_hour_bill(input_price: float, uncached: int, read: int, five: int, hour: int, output: int) -> float:
    return (uncached * input_price + read * PRICE["cached_input"] + five * PRICE["cache_write"]
            + hour * PRICE["cache_write_1h"] + output * PRICE["output"]) / 1e6


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_anthropic_one_hour_cache_writes_counted_and_priced(priced_gw: RunningGateway, priced: openai.OpenAI,
                                                            upstream: ReplayServer, streamed: bool) -> None:
    recording = load(ANTHROPIC_REC / "cache-write-1h.sse", provider="anthropic")[0]
    upstream.enqueue(recording if streamed else anthropic_json(accumulate(recording)))
    request = {"model": "claude-priced", "input": "How long is the contract?"}
    if streamed:
        body = stream_raw(priced_gw, request)[-1]["response"]  # every event validated by the SDK's types
    else:
        body = json.loads(priced.responses.with_raw_response.create(**request).http_response.text)  # type: ignore[arg-type]
    validate_response(body)
    details = body["usage"]["input_tokens_details"]
    assert details["cached_tokens"] == 1000
    assert details["cached_tokens_created"] == 3000  # still every write, whatever its TTL
    assert details["cache_write_1h_tokens"] == 2000
    assert body["usage"]["input_tokens"] == 20 + 1000 + 3000
    # What Anthropic bills: 1000 tokens written for 5 minutes (1.25x), 2000 for an hour (2x).
    assert body["cost"]["total"] == pytest.approx(_one_hour_bill(3.0, 20, 1000, 1000, 2000, 50))


@pytest.mark.parametrize("name", ["cache-write-1h.json", "cache-write-1h.chunks.txt"])
def test_bedrock_one_hour_cache_writes_counted_and_priced(priced_gw: RunningGateway, priced: openai.OpenAI,
                                                          upstream: ReplayServer, name: str) -> None:
    upstream.enqueue(load(BEDROCK_REC / name, provider="bedrock"))
    request = {"model": "claude-bedrock-priced", "input": "How long is the contract?"}
    if name.endswith(".json"):
        raw = priced.responses.with_raw_response.create(**request)  # type: ignore[arg-type]
        body = json.loads(raw.http_response.text)
    else:
        body = stream_raw(priced_gw, request)[-1]["response"]
    validate_response(body)
    details = body["usage"]["input_tokens_details"]
    assert (details["cached_tokens"], details["cached_tokens_created"], details["cache_write_1h_tokens"]) == (
        1000, 3000, 2000)
    assert body["cost"]["total"] == pytest.approx(_one_hour_bill(3.0, 20, 1000, 1000, 2000, 50))


def test_cost_prices_one_hour_writes_with_fallbacks() -> None:
    usage = normalize_usage({"input_tokens": 1_000_000 + 300_000, "output_tokens": 0, "input_tokens_details": {
        "cached_tokens": 0, "cached_tokens_created": 300_000, "cache_write_1h_tokens": 200_000}})
    assert usage["input_tokens_details"]["cache_write_1h_tokens"] == 200_000
    full = Price(input=3.0, output=15.0, cache_write=3.75, cache_write_1h=6.0)
    assert response_cost(usage, full) == pytest.approx(3.0 + 0.1 * 3.75 + 0.2 * 6.0)
    # Without a 1h rate, 1h writes cost what other writes cost (the cache_write rate, else input).
    assert response_cost(usage, Price(input=3.0, output=15.0, cache_write=3.75)) == pytest.approx(3.0 + 0.3 * 3.75)
    assert response_cost(usage, Price(input=3.0, output=15.0)) == pytest.approx(1.3 * 3.0)
    # Upstreams that do not split writes by TTL report no 1h tokens.
    assert normalize_usage({"input_tokens": 5})["input_tokens_details"]["cache_write_1h_tokens"] == 0


def test_price_config_key() -> None:
    config = parse_config("""
builtin_catalog: false
providers: {a: {type: anthropic}}
models: {m: {routes: [{provider: a, model: x, price: {input: 3, output: 15, cache_write: 3.75, cache_write_1h: 6}}]}}
""")
    assert config.models["m"].routes[0].price == Price(input=3, output=15, cache_write=3.75, cache_write_1h=6)


def test_builtin_catalog_prices_one_hour_writes_for_claude() -> None:
    # Anthropic bills 5-minute cache writes at 1.25x the input price and 1-hour writes at 2x, on the
    # Claude API and on Bedrock alike.
    catalog = yaml.safe_load(CATALOG.read_text())
    claude_routes = [route for name, model in catalog["models"].items() if name.startswith("claude-")
                     for route in model["routes"]]
    assert claude_routes
    for route in claude_routes:
        price = msgspec.convert(route["price"], Price)
        assert price.cache_write_1h == pytest.approx(2 * price.input), route
        assert price.cache_write == pytest.approx(1.25 * price.input), route


# --- 6. Bedrock: part-level cache_control ------------------------------------------------------------


def test_bedrock_part_cache_control_becomes_cache_points(oai: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(bedrock_json(made._converse([{"text": "ok"}], "end_turn",
                                                 {"inputTokens": 10, "outputTokens": 1, "totalTokens": 11})))
    oai.responses.create(model="claude-bedrock", tools=[{"type": "function", "name": "f"}], input=[  # type: ignore[arg-type]
        {"role": "system", "content": [{"type": "input_text", "text": "long rules", "cache_control": EPH},
                                       {"type": "input_text", "text": "volatile"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "the document", "cache_control": EPH},
                                     {"type": "input_text", "text": "a question"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "an answer", "cache_control": EPH}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [
            {"type": "input_text", "text": "result a"},
            {"type": "input_text", "text": "result b", "cache_control": HOUR}]},
    ])
    sent = assert_valid_converse(upstream.requests[-1])
    # The 1h point (on the tool result) upgrades the points before it; Converse tool results hold no
    # cachePoint, so a part's point inside one follows the toolResult block.
    assert sent["system"] == [{"text": "long rules"}, HOUR_POINT, {"text": "volatile"}]
    assert sent["messages"][0] == {"role": "user", "content": [{"text": "the document"}, HOUR_POINT,
                                                               {"text": "a question"}]}
    assert sent["messages"][1]["content"][:2] == [{"text": "an answer"}, HOUR_POINT]
    result_turn = sent["messages"][2]["content"]
    assert [list(block) for block in result_turn] == [["toolResult"], ["cachePoint"]]
    assert result_turn[1] == HOUR_POINT


def test_bedrock_part_and_message_cache_control_share_one_point() -> None:
    body = _bedrock_body({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "a", "cache_control": EPH},
        {"type": "input_text", "text": "b", "cache_control": EPH}], "cache_control": HOUR}]})
    # The message-level point lands after its last block, where part b's point already is: one point.
    assert body["messages"][0]["content"] == [{"text": "a"}, HOUR_POINT, {"text": "b"}, HOUR_POINT]
    # Parts count toward the limit of four like any other point.
    parts = [{"type": "input_text", "text": f"p{i}", "cache_control": EPH} for i in range(6)]
    body = _bedrock_body({"input": [{"role": "user", "content": parts}]})
    assert [b.get("text", "*") for b in body["messages"][0]["content"]] == [
        "p0", "*", "p1", "p2", "p3", "*", "p4", "*", "p5", "*"]


def test_bedrock_part_cache_control_on_a_dropped_part_is_dropped() -> None:
    body = _bedrock_body({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "a"}, {"type": "input_text", "text": "", "cache_control": EPH}]}]})
    assert body["messages"][0]["content"] == [{"text": "a"}]


# --- 8. function tools' strict ------------------------------------------------------------------------

LOOSE = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}
NARROWED = {"type": "object", "properties": {"n": {"type": "integer", "description": "{minimum: 1}"}},
            "required": ["n"], "additionalProperties": False}


def _tools() -> list[dict[str, Any]]:
    return [{"type": "function", "name": "strict_one", "parameters": LOOSE, "strict": True},
            {"type": "function", "name": "loose_one", "parameters": LOOSE, "strict": False},
            {"type": "function", "name": "unset_one", "parameters": LOOSE}]


def test_anthropic_strict_tools(oai: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(anthropic_json(_message([{"type": "text", "text": "ok"}])))
    create(oai, model="claude", input="hi", tools=_tools())
    tools = anthropic_sent(upstream)["tools"]  # valid per Anthropic's schema (Tool.strict is a boolean)
    # strict: true -> Claude's strict tool use, the schema narrowed to what it accepts (as for
    # output_config.format); false and unset -> Claude's default, not strict, the schema as sent.
    assert tools[0] == {"name": "strict_one", "input_schema": NARROWED, "strict": True}
    assert tools[1] == {"name": "loose_one", "input_schema": LOOSE}
    assert tools[2] == {"name": "unset_one", "input_schema": LOOSE}


@pytest.mark.parametrize("model", ["claude-3-5", "claude-no-strict"])
def test_anthropic_strict_not_sent_where_refused(oai: openai.OpenAI, upstream: ReplayServer, model: str) -> None:
    # Claude before 4.5 answers 400 "does not support strict tools"; the option turns it off.
    upstream.enqueue(anthropic_json(_message([{"type": "text", "text": "ok"}])))
    create(oai, model=model, input="hi", tools=_tools()[:1])
    assert anthropic_sent(upstream)["tools"] == [{"name": "strict_one", "input_schema": LOOSE}]


@pytest.mark.parametrize(("model", "takes"), [
    ("claude-sonnet-4-5", True), ("claude-haiku-4-5-20251001", True), ("claude-opus-4-1-20250805", True),
    ("claude-opus-4-6", True), ("claude-fable-5-2", True), ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", True),
    ("claude-sonnet-4-20250514", False), ("claude-opus-4-0", False), ("claude-3-7-sonnet-20250219", False),
    ("claude-3-5-haiku-latest", False), ("anthropic.claude-sonnet-4-20250514-v1:0", False),
    ("claude-sonnet-4@20250514", False), ("claude-instant-1.2", False),
])
def test_which_claude_models_take_strict_tools(model: str, takes: bool) -> None:
    assert claude_policy.takes_strict_tools(model) is takes


def test_bedrock_strict_tools(oai: openai.OpenAI, upstream: ReplayServer) -> None:
    text = made._converse([{"text": "ok"}], "end_turn", {"inputTokens": 10, "outputTokens": 1, "totalTokens": 11})
    for model, strict in (("claude-bedrock", True), ("claude-4-bedrock", False), ("nova-bedrock", False)):
        upstream.enqueue(bedrock_json(text))
        oai.responses.create(model=model, input="hi", tools=_tools())  # type: ignore[arg-type]
        specs = [t["toolSpec"] for t in assert_valid_converse(upstream.requests[-1])["toolConfig"]["tools"]]
        if strict:
            assert specs[0] == {"name": "strict_one", "inputSchema": {"json": NARROWED}, "strict": True}
        else:
            assert specs[0] == {"name": "strict_one", "inputSchema": {"json": LOOSE}}
        assert [("strict" in spec, spec["inputSchema"]["json"]) for spec in specs[1:]] == [(False, LOOSE)] * 2


def test_bedrock_strict_tools_option_still_forwards_for_other_vendors() -> None:
    body = _bedrock_body({"tools": _tools()}, model=NOVA, options={"strict_tools": True})
    specs = [t["toolSpec"] for t in body["toolConfig"]["tools"]]
    assert [spec.get("strict") for spec in specs] == [True, False, None]
    assert specs[0]["inputSchema"]["json"] == LOOSE  # other vendors get the schema as sent
    body = _bedrock_body({"tools": _tools()}, options={"strict_tools": False})
    assert all("strict" not in t["toolSpec"] for t in body["toolConfig"]["tools"])


# --- 10. user ------------------------------------------------------------------------------------------


def test_anthropic_user_becomes_metadata_user_id(oai: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(anthropic_json(_message([{"type": "text", "text": "ok"}])))
    create(oai, model="claude", input="hi", user="user-7f3a")
    assert anthropic_sent(upstream)["metadata"] == {"user_id": "user-7f3a"}
    # Anthropic takes at most 512 characters: a longer id goes as its SHA-256 (still one opaque id per user).
    long_id = "u" * 600
    upstream.enqueue(anthropic_json(_message([{"type": "text", "text": "ok"}])))
    create(oai, model="claude", input="hi", user=long_id)
    assert anthropic_sent(upstream)["metadata"] == {"user_id": hashlib.sha256(long_id.encode()).hexdigest()}
    upstream.enqueue(anthropic_json(_message([{"type": "text", "text": "ok"}])))
    create(oai, model="claude", input="hi")
    assert "metadata" not in anthropic_sent(upstream)


def test_bedrock_user_is_not_sent(oai: openai.OpenAI, upstream: ReplayServer) -> None:
    # Converse has no end-user id (requestMetadata only labels invocation logs): ignored.
    upstream.enqueue(bedrock_json(made._converse([{"text": "ok"}], "end_turn",
                                                 {"inputTokens": 10, "outputTokens": 1, "totalTokens": 11})))
    oai.responses.create(model="claude-bedrock", input="hi", user="user-7f3a")
    sent = assert_valid_converse(upstream.requests[-1])
    assert "requestMetadata" not in sent and "user-7f3a" not in json.dumps(sent)


# --- 11. reasoning summaries and reasoning tokens --------------------------------------------------------

THINKING = "The user wants the weather in Paris. I should call get_weather."  # tool-loop-thinking.1.sse


def _thinking_turn() -> Exchange:
    return load(ANTHROPIC_REC / "tool-loop-thinking.1.sse", provider="anthropic")[0]


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_anthropic_thinking_is_no_summary_unless_asked(oai: openai.OpenAI, upstream: ReplayServer,
                                                       streamed: bool) -> None:
    tools = [{"type": "function", "name": "get_weather"}]

    def turn(**request: Any) -> Any:
        upstream.enqueue(_thinking_turn() if streamed else anthropic_json(accumulate(_thinking_turn())))
        if streamed:
            response, events = stream(oai, model="claude", input="Weather in Paris?", tools=tools, **request)
            kinds = {e.type for e in events}
        else:
            response, _ = create(oai, model="claude", input="Weather in Paris?", tools=tools, **request)
            kinds = set()
        return response, kinds

    # reasoning.summary absent: thinking runs, nothing of it is shown (OpenAI shows no summary either).
    response, kinds = turn(reasoning={"effort": "high"})
    assert [item.type for item in response.output] == ["message", "function_call"]
    assert not {k for k in kinds if "reasoning" in k}
    assert anthropic_sent(upstream)["thinking"]["type"] == "enabled"
    # With include: the item carries the sealed thinking (for the next turn), still no summary.
    response, _ = turn(reasoning={"effort": "high"}, include=["reasoning.encrypted_content"])
    item = response.output[0]
    assert item.type == "reasoning" and item.summary == []  # type: ignore[union-attr]
    assert unseal(item.encrypted_content, "anthropic")["thinking"] == THINKING  # type: ignore[union-attr,index]
    # Asked for: the thinking text is the summary.
    for summary in ("auto", "concise", "detailed"):
        response, kinds = turn(reasoning={"effort": "high", "summary": summary})
        assert [part.text for part in response.output[0].summary] == [THINKING]  # type: ignore[union-attr]
        assert not streamed or "response.reasoning_summary_text.delta" in kinds


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_anthropic_reasoning_tokens_estimated(oai: openai.OpenAI, upstream: ReplayServer, streamed: bool) -> None:
    upstream.enqueue(_thinking_turn() if streamed else anthropic_json(accumulate(_thinking_turn())))
    call = stream if streamed else create
    response, _ = call(oai, model="claude", input="Weather?", reasoning={"effort": "high"})
    # No count in the usage: about one token per four characters of thinking text (an estimate).
    assert response.usage.output_tokens_details.reasoning_tokens == -(-len(THINKING) // 4)  # type: ignore[union-attr]


def test_anthropic_reported_thinking_tokens_win(oai: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(fixtures_root() / "anthropic/anthropic-sdk-python/stream-a-refusal.sse"))
    final, _ = stream(oai, model="claude", input="what is an eclipse?", reasoning={"effort": "low"})
    assert final.usage.output_tokens_details.reasoning_tokens == 67  # type: ignore[union-attr]
    # A reported 0 is a real count too (no thinking happened), not replaced by an estimate.
    message = _message([{"type": "thinking", "thinking": "x" * 40, "signature": "sig"},
                        {"type": "text", "text": "ok"}], output_tokens_details={"thinking_tokens": 0})
    result = MessageTranslator(anthropic_request.Plan()).message(message)
    assert result["usage"]["output_tokens_details"]["reasoning_tokens"] == 0


def test_reasoning_estimate_capped_by_output_tokens() -> None:
    message = _message([{"type": "thinking", "thinking": "x" * 400, "signature": "sig"}], output_tokens=20)
    result = MessageTranslator(anthropic_request.Plan()).message(message)
    assert result["usage"]["output_tokens_details"]["reasoning_tokens"] == 20


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_bedrock_claude_thinking_is_no_summary_unless_asked(oai: openai.OpenAI, upstream: ReplayServer,
                                                            streamed: bool) -> None:
    suffix = "chunks.txt" if streamed else "json"
    tools = [{"type": "function", "name": "get_weather"}]

    def turn(**request: Any) -> Any:
        upstream.enqueue(load(BEDROCK_REC / f"tool-loop-reasoning.1.{suffix}", provider="bedrock"))
        if streamed:
            with oai.responses.stream(model="claude-bedrock", input="Weather?", tools=tools, **request) as events:
                kinds = {e.type for e in events}
                return events.get_final_response(), kinds
        return oai.responses.create(model="claude-bedrock", input="Weather?", tools=tools, **request), set()

    response, kinds = turn(reasoning={"effort": "low"})
    assert [item.type for item in response.output] == ["message", "function_call"]
    assert not {k for k in kinds if "reasoning" in k}
    assert response.usage.output_tokens_details.reasoning_tokens == -(-len(made.THINK_1) // 4)  # type: ignore[union-attr]
    response, _ = turn(reasoning={"effort": "low"}, include=["reasoning.encrypted_content"])
    item = response.output[0]
    assert item.type == "reasoning" and item.summary == [] and not item.content  # type: ignore[union-attr]
    assert unseal(item.encrypted_content, "bedrock")["text"] == made.THINK_1  # type: ignore[union-attr,index]
    response, _ = turn(reasoning={"effort": "low", "summary": "auto"})
    assert [part.text for part in response.output[0].summary] == [made.THINK_1]  # type: ignore[union-attr]
