"""Codex-style requests (namespace, custom and hosted tools) through every upstream, with the openai SDK.

Codex CLI sends `namespace` tools (grouped functions), `custom` (freeform) tools such as
`apply_patch`, a hosted `web_search` with `external_web_access: false`, `client_metadata` and
`prompt_cache_key`. Each upstream here answers turn 1 with a call to the custom tool and one to a
namespaced function (hand-written recordings `codex-tools.1.*` in its own wire shape), then turn 2
with a text once the client sent both results back. The client must see `custom_tool_call` /
namespaced `function_call` items, the upstream valid function names and its own tool-use shapes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.replay.recordings import Exchange, load
from tests.replay.server import ReplayServer

OWN = Path(__file__).parent / "recordings"
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\n"
FINAL = "Sluice relayed both tool calls."
WIRE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

EXEC = {"type": "function", "name": "exec_command", "description": "Runs a command in a PTY.", "strict": False,
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"],
                       "additionalProperties": False}}
APPLY_PATCH = {"type": "custom", "name": "apply_patch",
               "description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool.",
               "format": {"type": "grammar", "syntax": "lark",
                          "definition": 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF'}}
AGENTS = {"type": "namespace", "name": "multi_agent_v1", "description": "Tools for spawning and managing sub-agents.",
          "tools": [{"type": "function", "name": "close_agent", "description": "Close an agent.", "strict": False,
                     "parameters": {"type": "object", "properties": {"target": {"type": "string"}},
                                    "required": ["target"], "additionalProperties": False}},
                    {"type": "function", "name": "spawn_agent", "description": "Spawn a sub-agent.", "strict": False,
                     "parameters": {"type": "object", "properties": {"message": {"type": "string"}},
                                    "additionalProperties": False}}]}
WEB = {"type": "web_search", "external_web_access": False}
TOOLS = [EXEC, APPLY_PATCH, AGENTS, WEB]
CODEX_EXTRA = {"client_metadata": {"x-codex-installation-id": "test"}, "prompt_cache_key": "session-1"}
FLAT_NAMES = ["exec_command", "apply_patch", "multi_agent_v1__close_agent", "multi_agent_v1__spawn_agent"]

# model name -> (recordings folder, recording stem of turn 1)
UPSTREAMS = {
    "anthropic": ("anthropic", "codex-tools"),
    "gemini": ("gemini", "codex-tools"),
    "bedrock": ("bedrock", "codex-tools"),
    "chat": ("openai-chat", "codex-tools"),
    "chat-native": ("openai-chat", "codex-tools-native"),
    "openai": ("openai-responses", "codex-tools"),
}


@pytest.fixture(scope="module")
def gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("codex-tools") / "sluice.db"
    url = upstream.url
    config = f"""
database: sqlite:///{db}
master_key: {MASTER_KEY}
builtin_catalog: false
providers:
  anthropic: {{type: anthropic, base_url: "{url}", api_key: test-anthropic}}
  gemini: {{type: gemini, base_url: "{url}", api_key: test-gemini}}
  bedrock: {{type: bedrock, base_url: "{url}", region: us-east-1, api_key: test-bedrock}}
  chat: {{type: openai-chat, base_url: "{url}/v1", api_key: test-chat}}
  chat-native: {{type: openai-chat, base_url: "{url}/v1", api_key: test-chat, options: {{custom_tools: native}}}}
  openai: {{type: openai, base_url: "{url}/v1", api_key: test-openai}}
  anthropic-strict: {{type: anthropic, base_url: "{url}", api_key: test-anthropic, unsupported_tools: refuse}}
  gemini-strict: {{type: gemini, base_url: "{url}", api_key: test-gemini, unsupported_tools: refuse}}
  bedrock-strict: {{type: bedrock, base_url: "{url}", region: us-east-1, api_key: k, unsupported_tools: refuse}}
  chat-strict: {{type: openai-chat, base_url: "{url}/v1", api_key: test-chat, unsupported_tools: refuse}}
models:
  anthropic: {{routes: [{{provider: anthropic, model: claude-sonnet-4-5}}]}}
  gemini: {{routes: [{{provider: gemini, model: gemini-2.5-flash}}]}}
  bedrock: {{routes: [{{provider: bedrock, model: us.anthropic.claude-sonnet-4-5-20250929-v1:0}}]}}
  chat: {{routes: [{{provider: chat, model: gpt-4o}}]}}
  chat-native: {{routes: [{{provider: chat-native, model: gpt-5.2}}]}}
  openai: {{routes: [{{provider: openai, model: gpt-5.2-codex}}]}}
  anthropic-strict: {{routes: [{{provider: anthropic-strict, model: claude-sonnet-4-5}}]}}
  gemini-strict: {{routes: [{{provider: gemini-strict, model: gemini-2.5-flash}}]}}
  bedrock-strict: {{routes: [{{provider: bedrock-strict, model: amazon.nova-pro-v1:0}}]}}
  chat-strict: {{routes: [{{provider: chat-strict, model: gpt-4o}}]}}
"""
    with running_gateway(config) as running:
        yield running


@pytest.fixture
def client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)


def recording(model: str, turn: int, stream: bool) -> Exchange:
    folder, stem = UPSTREAMS[model]
    if turn == 2:
        stem = "codex-tools"
    path = OWN / folder / f"{stem}.{turn}.{'chunks.txt' if stream else 'json'}"
    return load(path, provider=folder)[0]


def ask(client: openai.OpenAI, stream: bool, **kwargs: Any) -> tuple[Any, httpx.Headers | None]:
    """The final Response (the SDK's own stream accumulator checks a stream) and, unstreamed, the headers."""
    kwargs = {"tools": TOOLS, "extra_body": CODEX_EXTRA, **kwargs}
    if stream:
        with client.responses.stream(**kwargs) as events:
            return events.get_final_response(), None
    raw = client.responses.with_raw_response.create(**kwargs)
    return raw.parse(), raw.headers


# --- what each upstream received ------------------------------------------------------------------


def declared(model: str, body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Tool name -> its declaration, in the upstream's own shape."""
    if model == "anthropic":
        return {t["name"]: t for t in body.get("tools", [])}
    if model == "gemini":
        return {d["name"]: d for t in body.get("tools", []) for d in t.get("functionDeclarations", [])}
    if model == "bedrock":
        return {t["toolSpec"]["name"]: t["toolSpec"] for t in body.get("toolConfig", {}).get("tools", [])
                if "toolSpec" in t}
    return {(t.get("function") or t.get("custom"))["name"]: t for t in body.get("tools", [])}


def history(model: str, body: dict[str, Any]) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """([(called name, arguments object or custom input)], [(call id, result text)]) in the upstream's shape."""
    calls: list[tuple[str, Any]] = []
    results: list[tuple[str, Any]] = []
    if model == "anthropic":
        for block in (b for m in body["messages"] for b in m["content"] if isinstance(m["content"], list)):
            if block["type"] == "tool_use":
                calls.append((block["name"], block["input"]))
            elif block["type"] == "tool_result":
                results.append((block["tool_use_id"], block["content"]))
    elif model == "gemini":
        for part in (p for c in body["contents"] for p in c["parts"]):
            if "functionCall" in part:
                calls.append((part["functionCall"]["name"], part["functionCall"]["args"]))
            elif "functionResponse" in part:
                results.append((part["functionResponse"]["name"], part["functionResponse"]["response"]))
    elif model == "bedrock":
        for block in (b for m in body["messages"] for b in m["content"]):
            if "toolUse" in block:
                calls.append((block["toolUse"]["name"], block["toolUse"]["input"]))
            elif "toolResult" in block:
                results.append((block["toolResult"]["toolUseId"], block["toolResult"]["content"]))
    else:
        for message in body["messages"]:
            for call in message.get("tool_calls") or ():
                if call["type"] == "custom":
                    calls.append((call["custom"]["name"], call["custom"]["input"]))
                else:
                    calls.append((call["function"]["name"], json.loads(call["function"]["arguments"])))
            if message["role"] == "tool":
                results.append((message["tool_call_id"], message["content"]))
    return calls, results


# --- the round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("model", ["anthropic", "gemini", "bedrock", "chat", "chat-native"])
def test_namespace_and_custom_tools_round_trip(client: openai.OpenAI, upstream: ReplayServer, model: str,
                                               stream: bool) -> None:
    conversation: list[dict[str, Any]] = [{"role": "user", "content": "Add hello.txt, then close the agent."}]
    upstream.enqueue(recording(model, 1, stream))
    turn1, headers = ask(client, stream, model=model, input=conversation)

    # The client sees the tools it declared: a custom tool call and a namespaced function call.
    patch, close = turn1.output
    assert (patch.type, patch.name, patch.input, patch.namespace) == ("custom_tool_call", "apply_patch", PATCH, None)
    assert (close.type, close.name, close.namespace) == ("function_call", "close_agent", "multi_agent_v1")
    assert json.loads(close.arguments) == {"target": "nobody"}
    assert patch.call_id != close.call_id and patch.status == close.status == "completed"
    if headers is not None:
        assert headers["x-sluice-dropped-tools"] == "web_search"  # no live search was allowed

    # The upstream got valid, unique function names; the custom tool as a function of `input`
    # (or natively on a Chat server configured for custom tools); no web search.
    sent = upstream.requests[-1].json
    tools = declared(model, sent)
    assert list(tools) == FLAT_NAMES
    assert all(WIRE_NAME.match(name) for name in tools)
    if model == "chat-native":
        assert tools["apply_patch"] == {"type": "custom", "custom": {
            "name": "apply_patch", "description": APPLY_PATCH["description"],
            "format": {"type": "grammar", "grammar": {"definition": APPLY_PATCH["format"]["definition"],
                                                      "syntax": "lark"}}}}
    else:
        text = json.dumps(tools["apply_patch"])
        assert '"input"' in text and "begin_patch hunk+ end_patch" in text
    assert "web_search" not in json.dumps(sent) and "client_metadata" not in json.dumps(sent)

    # Turn 2: both calls and their results go back; the upstream sees its own tool-use shapes.
    conversation += [item.model_dump(exclude_none=True) for item in turn1.output]
    conversation += [{"type": "custom_tool_call_output", "call_id": patch.call_id, "output": "patch rejected"},
                     {"type": "function_call_output", "call_id": close.call_id, "output": "no such agent"}]
    upstream.enqueue(recording(model, 2, stream))
    turn2, _ = ask(client, stream, model=model, input=conversation)
    assert turn2.output_text == FINAL
    calls, results = history(model, upstream.requests[-1].json)
    patch_input = PATCH if model == "chat-native" else {"input": PATCH}
    assert calls == [("apply_patch", patch_input), ("multi_agent_v1__close_agent", {"target": "nobody"})]
    outputs = [json.dumps(result) for _, result in results]
    assert len(results) == 2 and "patch rejected" in outputs[0] and "no such agent" in outputs[1]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_openai_upstream_gets_the_tools_as_sent(client: openai.OpenAI, upstream: ReplayServer, stream: bool) -> None:
    upstream.enqueue(recording("openai", 1, stream))
    turn1, headers = ask(client, stream, model="openai", input="go")
    patch, close = turn1.output
    assert (patch.type, patch.input, close.namespace, close.name) == ("custom_tool_call", PATCH, "multi_agent_v1",
                                                                      "close_agent")
    sent = upstream.requests[-1].json
    assert sent["tools"] == TOOLS  # namespaces, custom and hosted tools: OpenAI's own
    assert sent["client_metadata"] == CODEX_EXTRA["client_metadata"] and sent["prompt_cache_key"] == "session-1"
    if headers is not None:
        assert "x-sluice-dropped-tools" not in headers
    conversation = [{"role": "user", "content": "go"}, *(item.model_dump(exclude_none=True) for item in turn1.output),
                    {"type": "custom_tool_call_output", "call_id": patch.call_id, "output": "ok"}]
    upstream.enqueue(recording("openai", 2, stream))
    turn2, _ = ask(client, stream, model="openai", input=conversation)
    assert turn2.output_text == FINAL
    items = upstream.requests[-1].json["input"]
    assert [i["type"] for i in items[1:]] == ["custom_tool_call", "function_call", "custom_tool_call_output"]
    assert items[2]["namespace"] == "multi_agent_v1"


# --- hosted tools --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["anthropic-strict", "gemini-strict", "bedrock-strict", "chat-strict"])
def test_hosted_tool_without_equivalent_is_refused_when_configured(client: openai.OpenAI, upstream: ReplayServer,
                                                                   model: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=model, input="hi", tools=TOOLS)
    assert (info.value.param, info.value.code) == ("tools[3].type", "unsupported_parameter")
    assert "'web_search' tool is not supported" in info.value.message
    assert not upstream.requests


def test_hosted_tools_with_an_equivalent_are_mapped(client: openai.OpenAI, upstream: ReplayServer) -> None:
    # Live web search allowed: Anthropic's and Gemini's own search; code_interpreter: their code execution.
    hosted = [EXEC, {"type": "web_search"}, {"type": "code_interpreter", "container": {"type": "auto"}}]
    upstream.enqueue(recording("anthropic", 2, False))
    raw = client.responses.with_raw_response.create(model="anthropic", input="hi", tools=hosted)
    assert "x-sluice-dropped-tools" not in raw.headers
    assert [t.get("type") for t in upstream.requests[-1].json["tools"]] == [
        None, "web_search_20250305", "code_execution_20250825"]
    upstream.enqueue(recording("gemini", 2, False))
    raw = client.responses.with_raw_response.create(model="gemini", input="hi", tools=hosted)
    assert "x-sluice-dropped-tools" not in raw.headers
    assert [list(t) for t in upstream.requests[-1].json["tools"]] == [
        ["functionDeclarations"], ["googleSearch"], ["codeExecution"]]
    # Bedrock has neither: both dropped, and named.
    upstream.enqueue(recording("bedrock", 2, False))
    raw = client.responses.with_raw_response.create(model="bedrock", input="hi", tools=hosted)
    assert raw.headers["x-sluice-dropped-tools"] == "web_search, code_interpreter"
    assert [t["toolSpec"]["name"] for t in upstream.requests[-1].json["toolConfig"]["tools"]] == ["exec_command"]
