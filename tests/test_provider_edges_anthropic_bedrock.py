"""Edge cases of the Anthropic and Bedrock adapters, one group of tests per case:

1. tool history (function_call / function_call_output) in a request that sends no tools;
2. Anthropic cache breakpoints inside tool_result content count toward the limit of 4;
3. Bedrock streams a tool call without arguments as "{}", as the non-streaming answer does;
4. `strict_schema` keeps `items` / `format` / object rules of nullable types (`["array", "null"]`);
5. a forced JSON tool (`structured_output: tool`) leaves thinking off on both adapters;
6. Anthropic `pause_turn` -> incomplete with a reason every openai SDK accepts; cache_control on
   the parts of system/developer messages reaches the system text blocks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import openai
import pydantic
import pytest

from sluice.canonical.request import parse_request
from sluice.providers import anthropic_request
from sluice.providers.anthropic import MessageTranslator
from sluice.providers.bedrock_request import Plan as BedrockPlan
from sluice.providers.bedrock_request import build_body as bedrock_build_body
from sluice.providers.bedrock_response import ConverseTranslator
from sluice.providers.claude_schema import strict_schema
from tests import bedrock_make_recordings as made
from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.replay import Exchange, ReplayServer
from tests.test_provider_anthropic import create as anthropic_create
from tests.test_provider_anthropic import json_exchange as anthropic_json
from tests.test_provider_anthropic import sent as anthropic_sent
from tests.test_provider_anthropic import stream as anthropic_stream
from tests.test_provider_bedrock import (
    CLAUDE_45,
    assemble,
    assert_valid_converse,
    comparable,
    stream_raw,
    validate_response,
)
from tests.test_provider_bedrock import json_exchange as bedrock_json

CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
providers:
  claude:
    type: anthropic
    base_url: {upstream}
    api_key: sk-ant-test
  replay-bedrock:
    type: bedrock
    base_url: {upstream}
    region: us-east-1
    aws_access_key_id: AKIDTEST
    aws_secret_access_key: test-secret
models:
  claude-sonnet-4-5:
    capabilities: {caps}
    routes:
      - {{provider: claude, model: claude-sonnet-4-5}}
  claude-bedrock:
    capabilities: {caps}
    routes:
      - {{provider: replay-bedrock, model: "{claude45}"}}
"""
CAPS = "[tools, parallel_tool_calls, images, files, json_schema, reasoning, prompt_caching, temperature]"
MODEL = "claude-sonnet-4-5"
EPH = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
PAST_NOTE = "A tool used earlier in this conversation; it is not available now."
NO_PARAMETERS = {"type": "object", "properties": {}}

# A conversation that used two tools (one of them twice) and is now continued.
HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Paris and Rome, then the time?"},
    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"},
    {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{\"city\": \"Rome\"}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    {"type": "function_call_output", "call_id": "call_2", "output": "rain"},
    {"type": "function_call", "call_id": "call_3", "name": "get_time", "arguments": ""},
    {"type": "function_call_output", "call_id": "call_3", "output": "12:00"},
    {"role": "user", "content": "Thanks, summarize."},
]
OTHER_TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
# allowed_tools that leave none of the request's tools.
NONE_ALLOWED = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "absent"}]}


@pytest.fixture(scope="module")
def gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = Path(tmp_path_factory.mktemp("review-fixes-db")) / "sluice.db"
    text = CONFIG.format(db=db, master=MASTER_KEY, upstream=upstream.url, caps=CAPS, claude45=CLAUDE_45)
    with running_gateway(text) as running:
        yield running


@pytest.fixture
def oai(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)


def _text_message(stop_reason: str = "end_turn", text: str = "Done.") -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": text}], "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 3}}


def _converse_text() -> dict[str, Any]:
    return made._converse([{"text": "Done."}], "end_turn", {"inputTokens": 10, "outputTokens": 3, "totalTokens": 13})


def _anthropic_body(request: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    parsed = parse_request(json.dumps({"model": "m", **request}).encode())
    return anthropic_request.build_body(parsed, MODEL, False, options or {})[0]


def _bedrock_body(request: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    parsed = parse_request(json.dumps({"model": "m", "input": "hi", **request}).encode())
    return bedrock_build_body(parsed, CLAUDE_45, options or {})[0]


def _cache_controls(value: Any) -> list[dict[str, Any]]:
    """Every cache_control in a request body, wherever it is nested, in document order."""
    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        for key, sub in value.items():
            if key == "cache_control" and isinstance(sub, dict):
                found.append(sub)
            else:
                found += _cache_controls(sub)
    elif isinstance(value, list):
        for sub in value:
            found += _cache_controls(sub)
    return found


# --- 1. tool history in a request without tools -----------------------------------------------------


@pytest.mark.parametrize("request_", [{}, {"tools": [OTHER_TOOL], "tool_choice": NONE_ALLOWED}],
                         ids=["no-tools", "allowed-tools-left-none"])
def test_anthropic_tool_history_without_tools_declares_past_tools(oai: openai.OpenAI, upstream: ReplayServer,
                                                                   request_: dict[str, Any]) -> None:
    upstream.enqueue(anthropic_json(_text_message()))
    response, _ = anthropic_create(oai, model=MODEL, input=HISTORY, **request_)
    assert response.status == "completed"
    body = anthropic_sent(upstream)  # checked against Anthropic's OpenAPI schema
    assert body["tools"] == [{"name": name, "description": PAST_NOTE, "input_schema": NO_PARAMETERS}
                             for name in ("get_weather", "get_time")]
    assert body["tool_choice"] == {"type": "none"}  # the model may not call them


def test_anthropic_past_tools_only_when_needed() -> None:
    # No tool history: nothing is declared.
    assert "tools" not in _anthropic_body({"input": "hi"})
    # Tools are sent: they stand as given, with the client's tool_choice.
    body = _anthropic_body({"input": HISTORY, "tools": [OTHER_TOOL], "tool_choice": "auto"})
    assert [t["name"] for t in body["tools"]] == ["lookup"] and body["tool_choice"] == {"type": "auto"}
    # parallel_tool_calls does not turn the synthesized tool_choice none into anything else.
    body = _anthropic_body({"input": HISTORY, "parallel_tool_calls": False})
    assert body["tool_choice"] == {"type": "none"}
    # tool_choice none is not a forced tool: thinking stays on once the tool loop has been answered.
    answered = [*HISTORY, {"role": "assistant", "content": "Sunny, rain, noon."}, {"role": "user", "content": "More?"}]
    body = _anthropic_body({"input": answered, "reasoning": {"effort": "low"}})
    assert body["tool_choice"] == {"type": "none"} and body["thinking"]["type"] == "enabled"


@pytest.mark.parametrize("request_",
                         [{}, {"tool_choice": "none"}, {"tools": [OTHER_TOOL], "tool_choice": NONE_ALLOWED}],
                         ids=["no-tools", "tool-choice-none", "allowed-tools-left-none"])
def test_bedrock_tool_history_without_tools_declares_past_tools(oai: openai.OpenAI, upstream: ReplayServer,
                                                                request_: dict[str, Any]) -> None:
    upstream.enqueue(bedrock_json(_converse_text()))
    response = oai.responses.create(model="claude-bedrock", input=HISTORY, **request_)  # type: ignore[arg-type]
    assert response.status == "completed"
    body = assert_valid_converse(upstream.requests[-1])  # checked against the Converse service model
    # Declared from the history, without toolChoice (Converse has no "none"; nothing is forced).
    assert body["toolConfig"] == {"tools": [
        {"toolSpec": {"name": name, "description": PAST_NOTE, "inputSchema": {"json": NO_PARAMETERS}}}
        for name in ("get_weather", "get_time")]}


def test_bedrock_past_tools_only_when_needed() -> None:
    assert "toolConfig" not in _bedrock_body({"tools": [OTHER_TOOL], "tool_choice": NONE_ALLOWED})
    assert "toolConfig" not in _bedrock_body({"tool_choice": "none"})
    body = _bedrock_body({"input": HISTORY, "tools": [OTHER_TOOL]})
    assert [t["toolSpec"]["name"] for t in body["toolConfig"]["tools"]] == ["lookup"]
    # allowed_tools mode required (toolChoice any) that left no tool does not force a past one.
    body = _bedrock_body({"input": HISTORY[:4], "tools": [OTHER_TOOL], "tool_choice": NONE_ALLOWED})
    assert body["toolConfig"] == {"tools": [{"toolSpec": {"name": "get_weather", "description": PAST_NOTE,
                                                          "inputSchema": {"json": NO_PARAMETERS}}}]}


# --- 2. Anthropic breakpoints inside tool_result content -----------------------------------------------


def test_anthropic_tool_result_part_breakpoints_count(oai: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(anthropic_json(_text_message()))
    anthropic_create(oai, model=MODEL, tools=[{"type": "function", "name": "f", "cache_control": EPH}], input=[
        {"role": "system", "content": "rules", "cache_control": EPH},
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "cache_control": EPH, "output": [
            {"type": "input_text", "text": "part a", "cache_control": EPH},
            {"type": "input_text", "text": "part b", "cache_control": EPH}]},
        {"role": "user", "content": "next", "cache_control": EPH},
    ])
    body = anthropic_sent(upstream)
    # Six breakpoints asked for, two of them inside the tool_result: four are sent in all. The first
    # (the tools) and the three latest stay.
    assert len(_cache_controls(body)) == 4
    assert "cache_control" in body["tools"][0] and "cache_control" not in body["system"][0]
    result = body["messages"][2]["content"][0]
    assert result["type"] == "tool_result" and "cache_control" in result
    assert ["cache_control" in part for part in result["content"]] == [False, True]
    assert "cache_control" in body["messages"][2]["content"][-1]


def test_anthropic_tool_result_part_one_hour_upgrades_earlier_breakpoints() -> None:
    body = _anthropic_body({"tools": [{"type": "function", "name": "f", "cache_control": EPH}], "input": [
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": [
            {"type": "input_text", "text": "result", "cache_control": HOUR}]},
    ]})
    # Anthropic rejects a 1h breakpoint after a 5m one: the earlier tool breakpoint becomes 1h too.
    assert body["tools"][0]["cache_control"] == HOUR
    assert body["messages"][2]["content"][0]["content"][0]["cache_control"] == HOUR


# --- 3. Bedrock stream: a tool call without arguments --------------------------------------------------


def _tool_call_events(pieces: list[str]) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockStart", {"contentBlockIndex": 0,
                               "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "get_time"}}}),
    ]
    events += [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}})
               for piece in pieces]
    events += [("contentBlockStop", {"contentBlockIndex": 0}), ("messageStop", {"stopReason": "tool_use"}),
               ("metadata", {"usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15}})]
    return events


@pytest.mark.parametrize(("pieces", "arguments"), [([], "{}"), ([""], "{}"), (['{"tz":', ' "UTC"}'], '{"tz": "UTC"}')],
                         ids=["no-delta", "empty-delta", "with-input"])
def test_bedrock_stream_tool_call_arguments_match_create(pieces: list[str], arguments: str) -> None:
    plan = BedrockPlan(family="anthropic", seal=False, summary=True)
    streamed = ConverseTranslator(plan)
    events: list[dict] = []
    for kind, payload in _tool_call_events(pieces):
        events += streamed.feed(kind, payload)
    events += streamed.finish()
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == arguments
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert deltas == arguments  # the deltas add up to the final arguments
    final = events[-1]["response"]["output"]
    assert final[0]["arguments"] == arguments

    whole = ConverseTranslator(plan)
    whole.message(assemble(_tool_call_events(pieces))["output"]["message"]["content"])
    whole.stop_reason = "tool_use"
    assert comparable(whole.finish()[-1]["response"]["output"]) == comparable(final)


def test_bedrock_stream_tool_call_without_arguments_through_gateway(gw: RunningGateway, oai: openai.OpenAI,
                                                                    upstream: ReplayServer) -> None:
    frames = b"".join(made._frame(kind, payload) for kind, payload in _tool_call_events([""]))
    upstream.enqueue(Exchange("POST", "/model/x/converse-stream", None, 200,
                              {"content-type": "application/vnd.amazon.eventstream"}, frames, True, "made-in-test"))
    tools = [{"type": "function", "name": "get_time"}]
    events = stream_raw(gw, {"model": "claude-bedrock", "input": "time?", "tools": tools})  # SDK-validated events
    streamed = events[-1]["response"]
    assert streamed["output"][0]["arguments"] == "{}"
    upstream.enqueue(bedrock_json(assemble(_tool_call_events([""]))))
    plain = oai.responses.create(model="claude-bedrock", input="time?", tools=tools)  # type: ignore[arg-type]
    assert plain.output[0].arguments == "{}"  # type: ignore[union-attr]
    validate_response(streamed)


# --- 4. strict_schema and nullable types ---------------------------------------------------------------


def test_strict_schema_nullable_array_keeps_items() -> None:
    schema = {"type": ["array", "null"], "items": {"type": "object", "properties": {"a": {"type": "string"}},
                                                    "additionalProperties": True}, "minItems": 1, "maxItems": 3}
    assert strict_schema(schema) == {
        "type": ["array", "null"],
        "items": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
        "minItems": 1,
        "description": "{maxItems: 3}",
    }


def test_strict_schema_nullable_string_and_object() -> None:
    assert strict_schema({"type": ["string", "null"], "format": "date"}) == {"type": ["string", "null"],
                                                                           "format": "date"}
    assert strict_schema({"type": ["null", "string"], "format": "color"}) == {
        "type": ["null", "string"], "description": "{format: \"color\"}"}
    assert strict_schema({"type": ["object", "null"], "properties": {"x": {"type": ["integer", "null"]}},
                          "additionalProperties": {"type": "string"}}) == {
        "type": ["object", "null"], "properties": {"x": {"type": ["integer", "null"]}},
        "additionalProperties": False}
    # Nested: a nullable array of nullable objects, inside a property.
    narrowed = strict_schema({"type": "object", "properties": {"tags": {
        "type": ["array", "null"], "items": {"type": ["object", "null"], "properties": {}}}}})
    assert narrowed["properties"]["tags"]["items"] == {"type": ["object", "null"], "properties": {},
                                                       "additionalProperties": False}
    # More than one non-null type: no single kind, kind-specific keywords go to the description.
    assert strict_schema({"type": ["string", "array"], "items": {"type": "string"}}) == {
        "type": ["string", "array"], "description": "{items: {\"type\":\"string\"}}"}


def test_nullable_array_reaches_both_claude_adapters() -> None:
    schema = {"type": "object", "properties": {"tags": {"type": ["array", "null"], "items": {"type": "string"}}},
              "required": ["tags"]}
    fmt = {"format": {"type": "json_schema", "name": "tags", "schema": schema}}
    sent = _anthropic_body({"input": "hi", "text": fmt})["output_config"]["format"]["schema"]
    assert sent["properties"]["tags"] == {"type": ["array", "null"], "items": {"type": "string"}}
    structure = _bedrock_body({"text": fmt})["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
    assert json.loads(structure["schema"])["properties"]["tags"]["items"] == {"type": "string"}


# --- 5. forced JSON tool vs thinking -----------------------------------------------------------------


JSON_FORMAT = {"format": {"type": "json_schema", "name": "answer",
                          "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}


@pytest.mark.parametrize(("request_", "options"), [
    ({"max_output_tokens": 4000, "reasoning": {"effort": "low"}}, {}),
    ({"reasoning": {"effort": "high"}}, {}),
    ({"max_output_tokens": 800, "reasoning": {"effort": "low"}}, {"reasoning": "adaptive", "thinking": "adaptive"}),
    ({"max_output_tokens": 800}, {}),
], ids=["cap-4000", "no-cap", "adaptive", "no-reasoning"])
def test_forced_json_tool_leaves_thinking_off(request_: dict[str, Any], options: dict[str, Any]) -> None:
    # The format is the client's contract and only a forced tool keeps it; Claude cannot think while
    # a tool is forced, so reasoning gives way, on Anthropic and on Bedrock alike.
    request = {**request_, "text": JSON_FORMAT}
    anthropic = _anthropic_body({"input": "hi", **request}, {"structured_output": "tool", **options})
    assert "thinking" not in anthropic and "output_config" not in anthropic
    assert anthropic["tool_choice"] == {"type": "tool", "name": "answer"}
    bedrock = _bedrock_body(request, {"structured_output": "tool", **options})
    assert "thinking" not in (bedrock.get("additionalModelRequestFields") or {}) and "outputConfig" not in bedrock
    assert bedrock["toolConfig"]["toolChoice"] == {"tool": {"name": "answer"}}


# --- 6. pause_turn; cache_control on system/developer parts ---------------------------------------------


class _OldIncompleteDetails(pydantic.BaseModel):
    """`IncompleteDetails` as openai 1.99 (this project's oldest supported SDK) types it."""

    model_config = pydantic.ConfigDict(extra="forbid")
    reason: Literal["max_output_tokens", "content_filter"] | None = None


def _sse(events: list[dict[str, Any]]) -> Exchange:
    body = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
    return Exchange("POST", "/v1/messages", None, 200, {"content-type": "text/event-stream"}, body, True,
                    "made-in-test")


def _paused_stream() -> list[dict[str, Any]]:
    message = {**_text_message(), "content": [], "stop_reason": None}
    return [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Searching"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "pause_turn", "stop_sequence": None},
         "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ]


def test_pause_turn_is_incomplete_without_a_false_reason(oai: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(anthropic_json(_text_message("pause_turn", "Searching")))
    plain, raw = anthropic_create(oai, model=MODEL, input="search the web")  # validated by the installed SDK
    assert plain.status == "incomplete"
    assert raw["incomplete_details"] == {"reason": None}
    _OldIncompleteDetails.model_validate(raw["incomplete_details"])  # and by the oldest supported one
    upstream.enqueue(_sse(_paused_stream()))
    final, events = anthropic_stream(oai, model=MODEL, input="search the web")
    assert events[-1].type == "response.incomplete"
    assert (final.status, final.incomplete_details) == (plain.status, plain.incomplete_details)
    assert final.incomplete_details is not None and final.incomplete_details.reason is None


def test_max_tokens_reason_unchanged() -> None:
    result = MessageTranslator(anthropic_request.Plan()).message(_text_message("max_tokens"))
    assert (result["status"], result["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    result = MessageTranslator(anthropic_request.Plan()).message(_text_message())
    assert result["status"] == "completed" and "incomplete_details" not in result


def test_system_part_cache_control_reaches_system_blocks(oai: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(anthropic_json(_text_message()))
    anthropic_create(oai, model=MODEL, instructions="Be brief.", input=[
        {"role": "system", "content": [{"type": "input_text", "text": "long rules", "cache_control": HOUR},
                                       {"type": "input_text", "text": "volatile"}]},
        {"role": "developer", "content": [{"type": "input_text", "text": "dev a"},
                                          {"type": "input_text", "text": "dev b", "cache_control": EPH}]},
        {"role": "user", "content": "hi"},
    ])
    body = anthropic_sent(upstream)
    assert body["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "long rules", "cache_control": HOUR},
        {"type": "text", "text": "volatile"},
        {"type": "text", "text": "dev a"},
        {"type": "text", "text": "dev b", "cache_control": EPH},
    ]


def test_system_part_breakpoints_count_toward_the_limit() -> None:
    parts = [{"type": "input_text", "text": f"rule {i}", "cache_control": EPH} for i in range(6)]
    body = _anthropic_body({"input": [{"role": "system", "content": parts}, {"role": "user", "content": "hi"}]})
    assert ["cache_control" in block for block in body["system"]] == [True, False, False, True, True, True]
    # A message-level cache_control on top marks the last block (as for other messages).
    system = {"role": "system", "content": [parts[0], {"type": "input_text", "text": "x"}], "cache_control": HOUR}
    body = _anthropic_body({"input": [system, {"role": "user", "content": "hi"}]})
    assert [block.get("cache_control") for block in body["system"]] == [HOUR, HOUR]  # 1h upgrades the 5m before it
