"""`sluice conformance` against a real gateway in front of every upstream wire protocol.

A scripted upstream answers each scenario's requests with recorded traffic in the right wire shape
(shared/fixtures and tests/recordings; a few adapted, said where): it recognises the scenario by its
prompt (`sluice.conformance.scenarios`), the turn by the tool result or follow-up a second turn
carries, and checks the request is streamed when the recording is. The command then runs as a
function for each upstream type, and as a subprocess to see its table and exit status, including
against a deployment whose upstream answers garbage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice.conformance import runner
from sluice.conformance import scenarios as sc
from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.replay import Exchange, ReceivedRequest, fixtures_root, load
from tests.replay.scripted import ScriptedUpstream

FIX = fixtures_root()
OWN = Path(__file__).parent / "recordings"

# The prompts tell the scenarios apart (checked in this order: a turn 2 body holds turn 1's prompt).
PROMPTS = {"create": sc.CREATE_PROMPT, "stream": sc.STREAM_PROMPT, "tool_loop": sc.TOOL_LOOP_PROMPT,
           "parse": sc.PARSE_PROMPT, "reasoning": sc.REASONING_PROMPT, "logprobs": sc.LOGPROBS_PROMPT,
           "usage": sc.USAGE_PROMPT}
SECOND_TURN = ("temperature_c", sc.FOLLOW_UP_PROMPT)  # the tool's result, or the follow-up question
CITY = '{"city": "Mexico City", "country": "Mexico"}'


# --- recordings, adapted where a scenario needs it -----------------------------------------------


def rec(path: str, index: int = 0) -> Exchange:
    """Exchange `index` of a shared recording (shared/fixtures)."""
    return load(FIX / path)[index]


def own(path: str) -> Exchange:
    """One of the hand-made recordings under tests/recordings (see PROVENANCE.md there)."""
    return load(OWN / path, provider=path.split("/")[0])[0]


def json_answer(body: dict[str, Any], path: str = "/") -> Exchange:
    return Exchange("POST", path, None, 200, {"content-type": "application/json"}, json.dumps(body).encode(), False,
                    source="adapted")


def renamed(exchange: Exchange, old: str, new: str = "get_weather") -> Exchange:
    """A recorded tool call, to the scenario's tool instead (the recording's own tool had another name)."""
    return Exchange(exchange.method, exchange.path, None, exchange.status, exchange.headers,
                    exchange.body.replace(old.encode(), new.encode()), exchange.stream, source=exchange.source)


def responses_call_to_weather(exchange: Exchange) -> Exchange:
    body = exchange.json()
    for item in body["output"]:
        if item["type"] == "function_call":
            item.update(name="get_weather", arguments='{"city":"Paris"}')
    return json_answer(body)


def chat_call_to_weather(exchange: Exchange) -> Exchange:
    body = exchange.json()
    for call in body["choices"][0]["message"]["tool_calls"]:
        call["function"] = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    return json_answer(body)


def anthropic_message(exchange: Exchange, *, thinking: bool = True) -> Exchange:
    """A streamed Anthropic recording as the whole Message a non-streaming call returns."""
    message: dict[str, Any] = {}
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for event in exchange.events():
        kind = event["type"]
        if kind == "message_start":
            message = {**event["message"], "usage": dict(event["message"]["usage"])}
        elif kind == "content_block_start":
            blocks[event["index"]] = dict(event["content_block"])
        elif kind == "content_block_delta":
            block, delta = blocks[event["index"]], event["delta"]
            field = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "signature"}.get(
                delta["type"])
            if field:
                block[field] += delta[field]
            elif delta["type"] == "input_json_delta":
                partial[event["index"]] = partial.get(event["index"], "") + delta["partial_json"]
        elif kind == "content_block_stop" and event["index"] in partial:
            blocks[event["index"]]["input"] = json.loads(partial.pop(event["index"]) or "{}")
        elif kind == "message_delta":
            message["stop_reason"] = event["delta"]["stop_reason"]
            message["usage"].update(event.get("usage") or {})
    message["content"] = [blocks[i] for i in sorted(blocks) if thinking or blocks[i]["type"] != "thinking"]
    return json_answer(message)


def anthropic_text(text: str) -> Exchange:
    body = rec("anthropic/vercel-ai/anthropic-text.json").json()
    body["content"] = [{"type": "text", "text": text}]
    return json_answer(body)


def gemini_sse(exchange: Exchange) -> Exchange:
    """A generateContent body served as a one-chunk `alt=sse` stream (the same JSON, framed)."""
    data = b"data: " + json.dumps(exchange.json()).encode() + b"\r\n\r\n"
    return Exchange("POST", "/", None, 200, {"content-type": "text/event-stream"}, data, True, source="adapted")


# (scenario, turn) -> the recorded answer, per wire protocol; logprobs missing: the model can't.
ANSWERS: dict[str, dict[tuple[str, int], Callable[[], Exchange]]] = {
    "openai": {
        ("create", 1): lambda: rec("openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml"),
        ("stream", 1): lambda: rec("openai-responses/simonw-llm/test_responses_basic_streaming.yaml"),
        ("tool_loop", 1): lambda: responses_call_to_weather(
            rec("openai-responses/pydantic-ai/test_openai_responses_model_simple_response_with_tool_call.yaml")),
        ("tool_loop", 2): lambda: rec(
            "openai-responses/pydantic-ai/test_openai_responses_model_simple_response_with_tool_call.yaml", 1),
        ("parse", 1): lambda: rec("openai-responses/pydantic-ai/test_native_output.yaml", 1),
        ("reasoning", 1): lambda: renamed(
            rec("openai-responses/vercel-ai/openai-reasoning-encrypted-content.1.chunks.txt"), "calculator"),
        ("reasoning", 2): lambda: rec("openai-responses/vercel-ai/openai-reasoning-encrypted-content.1.chunks.txt", 3),
        ("logprobs", 1): lambda: rec(
            "openai-responses/pydantic-ai/test_openai_instructions_with_responses_logprobs_streaming.yaml"),
        ("usage", 1): lambda: rec("openai-responses/vercel-ai/openai-phase.1.json"),
    },
    "openai-chat": {
        ("create", 1): lambda: rec("openai-chat/vercel-ai/openai-text.json"),
        ("stream", 1): lambda: rec("openai-chat/vercel-ai/openai-text.chunks.txt"),
        ("tool_loop", 1): lambda: chat_call_to_weather(rec("openai-chat/pydantic-ai/test_openai_native_output.yaml")),
        ("tool_loop", 2): lambda: rec("openai-chat/pydantic-ai/test_openai_native_output.yaml", 1),
        ("parse", 1): lambda: rec("openai-chat/pydantic-ai/test_openai_native_output.yaml", 1),
        # DeepSeek's visible reasoning_content: reasoning items, but no state to round-trip.
        ("reasoning", 1): lambda: rec("openai-chat/vercel-ai/deepseek-reasoning.chunks.txt"),
        ("reasoning", 2): lambda: rec("openai-chat/vercel-ai/openai-text.chunks.txt"),
        ("logprobs", 1): lambda: rec("openai-chat/openai-python/test_content_logprobs_events.83b060bae42e.sse"),
        ("usage", 1): lambda: rec("openai-chat/vercel-ai/openai-text.json"),
    },
    "anthropic": {
        ("create", 1): lambda: rec("anthropic/vercel-ai/anthropic-text.json"),
        ("stream", 1): lambda: rec("anthropic/vercel-ai/anthropic-text.chunks.txt"),
        ("tool_loop", 1): lambda: anthropic_message(
            own("anthropic/tool-loop-thinking.1.sse"), thinking=False),
        ("tool_loop", 2): lambda: anthropic_message(
            own("anthropic/tool-loop-thinking.2.sse"), thinking=False),
        ("parse", 1): lambda: anthropic_text(CITY),
        ("reasoning", 1): lambda: own("anthropic/tool-loop-thinking.1.sse"),
        ("reasoning", 2): lambda: own("anthropic/tool-loop-thinking.2.sse"),
        ("usage", 1): lambda: rec("anthropic/pydantic-ai/test_anthropic_cache_real_api.yaml", 1),
    },
    "gemini": {
        ("create", 1): lambda: rec("gemini/vercel-ai/google-text.json"),
        ("stream", 1): lambda: rec("gemini/vercel-ai/google-text.chunks.txt"),
        ("tool_loop", 1): lambda: own("gemini/tool-loop-thinking.1.json"),
        ("tool_loop", 2): lambda: own("gemini/tool-loop-thinking.2.json"),
        ("parse", 1): lambda: rec("gemini/pydantic-ai/test_google_native_output.yaml"),
        ("reasoning", 1): lambda: own("gemini/tool-loop-thinking.1.chunks.txt"),
        ("reasoning", 2): lambda: own("gemini/tool-loop-thinking.2.chunks.txt"),
        ("logprobs", 1): lambda: gemini_sse(rec("gemini/pydantic-ai/test_google_vertex_logprobs.yaml")),
        ("usage", 1): lambda: rec("gemini/pydantic-ai/test_google_model_cached_content.yaml", 1),
    },
    "bedrock": {
        ("create", 1): lambda: rec("bedrock/vercel-ai/amazon-bedrock-text.json"),
        ("stream", 1): lambda: rec("bedrock/vercel-ai/amazon-bedrock-text.chunks.txt"),
        ("tool_loop", 1): lambda: own("bedrock/tool-loop-reasoning.1.json"),
        ("tool_loop", 2): lambda: own("bedrock/tool-loop-reasoning.2.json"),
        ("parse", 1): lambda: own("bedrock/structured-output.json"),
        ("reasoning", 1): lambda: own("bedrock/tool-loop-reasoning.1.chunks.txt"),
        ("reasoning", 2): lambda: own("bedrock/tool-loop-reasoning.2.chunks.txt"),
        ("usage", 1): lambda: rec("bedrock/pydantic-ai/test_bedrock_cache_write_and_read.yaml", 1),
    },
}

# What `sluice conformance` must report per upstream type: ok, except what the type can't do.
EXPECTED_NOT_OK = {
    "openai": {},
    "openai-chat": {"reasoning": "unsupported"},  # no encrypted_content to round-trip
    "anthropic": {"logprobs": "unsupported"},
    "gemini": {},
    "bedrock": {"logprobs": "unsupported"},
}


def protocol_of(request: ReceivedRequest) -> tuple[str | None, bool]:
    """(wire protocol, streamed) of a request the gateway sent upstream; None for an unexpected path."""
    path = request.path
    if ":generateContent" in path or ":streamGenerateContent" in path:
        return "gemini", ":streamGenerateContent" in path
    if "/converse" in path:
        return "bedrock", path.endswith("/converse-stream")
    streamed = bool((request.json or {}).get("stream"))
    if path.endswith("/responses"):
        return "openai", streamed
    if path.endswith("/chat/completions"):
        return "openai-chat", streamed
    if path.endswith("/messages"):
        return "anthropic", streamed
    return None, streamed


def error(message: str) -> Exchange:
    body = {"error": {"message": f"scripted upstream: {message}", "type": "test_script_error"}}
    return Exchange("POST", "/", None, 500, {"content-type": "application/json"}, json.dumps(body).encode(), False)


def conformance_script(request: ReceivedRequest) -> Exchange:
    """The recorded answer to one of the conformance scenarios' requests."""
    protocol, streamed = protocol_of(request)
    if protocol is None:
        return error(f"unexpected path {request.path}")
    text = request.body.decode("utf-8", "replace")
    scenario = next((name for name, prompt in PROMPTS.items() if prompt in text), None)
    if scenario is None:
        return error("no conformance prompt in the request")
    turn = 2 if any(marker in text for marker in SECOND_TURN) else 1
    answer = ANSWERS[protocol].get((scenario, turn))
    if answer is None:
        return error(f"no answer for {protocol} {scenario} turn {turn}")
    exchange = answer()
    if exchange.stream != streamed:
        return error(f"{protocol} {scenario} turn {turn} asked {'a stream' if streamed else 'a whole answer'}")
    return exchange


def garbage_script(request: ReceivedRequest) -> Exchange:
    return Exchange("POST", "/", None, 200, {"content-type": "application/json"}, b"<html>garbage", False)


def wrong_tool_script(request: ReceivedRequest) -> Exchange:
    """Answers as the openai upstream would, but the tool call names a tool the client never declared."""
    exchange = conformance_script(request)
    if sc.TOOL_LOOP_PROMPT.encode() in request.body and b"temperature_c" not in request.body:
        return renamed(exchange, "get_weather", "get_capital")
    return exchange


# --- the deployment ------------------------------------------------------------------------------

CLAUDE_BEDROCK = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
MODELS = {  # model -> (provider, upstream model id, capabilities)
    "openai": ("openai", "gpt-5.2",
               ["tools", "parallel_tool_calls", "images", "files", "json_schema", "reasoning", "logprobs",
                "temperature"]),
    "openai-chat": ("chat", "gpt-4o", ["tools", "parallel_tool_calls", "json_schema", "reasoning", "logprobs",
                                       "temperature"]),
    "anthropic": ("anthropic", "claude-sonnet-4-5",
                  ["tools", "parallel_tool_calls", "images", "files", "json_schema", "reasoning", "prompt_caching",
                   "temperature"]),
    "gemini": ("gemini", "gemini-3-pro-preview",
               ["tools", "parallel_tool_calls", "images", "files", "json_schema", "reasoning", "logprobs",
                "temperature"]),
    "bedrock": ("bedrock", CLAUDE_BEDROCK,
                ["tools", "parallel_tool_calls", "images", "files", "json_schema", "reasoning", "prompt_caching",
                 "temperature"]),
}
PRICE = {"input": 1.0, "cached_input": 0.1, "output": 4.0}


def _config(db: Path, upstream: str, garbage: str, wrong_tool: str) -> str:
    providers: dict[str, Any] = {
        "openai": {"type": "openai", "base_url": f"{upstream}/v1", "api_key": "sk-upstream-openai"},
        "chat": {"type": "openai-chat", "base_url": f"{upstream}/v1", "api_key": "sk-upstream-chat"},
        "anthropic": {"type": "anthropic", "base_url": upstream, "api_key": "sk-ant-upstream"},
        "gemini": {"type": "gemini", "base_url": upstream, "api_key": "gemini-upstream"},
        "bedrock": {"type": "bedrock", "base_url": upstream, "region": "us-east-1",
                    "aws_access_key_id": "AKIDTEST", "aws_secret_access_key": "test-secret"},
        "garbage": {"type": "openai", "base_url": f"{garbage}/v1", "api_key": "sk-upstream-garbage"},
        "wrong-tool": {"type": "openai", "base_url": f"{wrong_tool}/v1", "api_key": "sk-upstream-wrong"},
    }
    models: dict[str, Any] = {
        f"conf-{name}": {"capabilities": caps, "routes": [{"provider": provider, "model": upstream_id,
                                                           "price": PRICE}]}
        for name, (provider, upstream_id, caps) in MODELS.items()
    }
    models["conf-broken"] = {**models["conf-openai"], "routes": [{"provider": "garbage", "model": "gpt-5.2"}]}
    models["conf-wrong-tool"] = {**models["conf-openai"], "routes": [{"provider": "wrong-tool", "model": "gpt-5.2"}]}
    return yaml.safe_dump({"database": f"sqlite:///{db}", "master_key": MASTER_KEY, "builtin_catalog": False,
                           "providers": providers, "models": models})


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("conformance") / "sluice.db"
    with (ScriptedUpstream(conformance_script) as upstream, ScriptedUpstream(garbage_script) as garbage,
          ScriptedUpstream(wrong_tool_script) as wrong_tool,
          running_gateway(_config(db, upstream.url, garbage.url, wrong_tool.url)) as gateway):
        yield gateway


def _results(report: runner.Report) -> dict[str, tuple[str, str]]:
    return {r.scenario: (r.result, r.detail) for r in report.results}


def _command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`sluice conformance ...` as a user runs it: the installed console script, in its own process."""
    script = Path(sys.executable).with_name("sluice")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "sluice"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SLUICE_"))}
    return subprocess.run([*head, "conformance", *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})})


# --- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("upstream_type", list(MODELS))
def test_every_scenario_against_each_upstream_type(deployment: RunningGateway, upstream_type: str) -> None:
    report = runner.run(deployment.url, f"conf-{upstream_type}", api_key=MASTER_KEY, timeout=20)

    results = _results(report)
    assert list(results) == list(runner.SCENARIOS)
    expected = {name: EXPECTED_NOT_OK[upstream_type].get(name, "ok") for name in runner.SCENARIOS}
    assert {name: result for name, (result, _) in results.items()} == expected, results
    assert report.failed == []
    assert report.base_url == f"{deployment.url}/v1"
    assert results["create"][1].endswith(f"(served by {MODELS[upstream_type][0]}/{MODELS[upstream_type][1]})")
    assert results["tool_loop"][1].startswith("get_weather(")
    assert "cost.total $0.0" in results["usage"][1] and "(0:" not in results["usage"][1]
    if results["logprobs"][0] == "unsupported":
        assert results["logprobs"][1].startswith("400 unsupported_parameter (")


def test_details_name_what_was_seen(deployment: RunningGateway) -> None:
    results = _results(runner.run(deployment.url, "conf-anthropic", api_key=MASTER_KEY, timeout=20))
    assert results["parse"] == ("ok", "CityLocation(city='Mexico City', country='Mexico')")
    assert results["tool_loop"][1] == "get_weather({\"city\":\"Paris\"}) -> 'It is 18°C and sunny in Paris.'"
    assert results["reasoning"][1].startswith("1 reasoning item(s) with encrypted_content")
    assert results["usage"][1].startswith("input 1532 (cached 1111), output 33 (reasoning 0), cost.total $")
    assert results["errors"][1] == ("400 invalid_request_error (param temperature, code invalid_value), "
                                    "the same before a stream; 404 model_not_found")
    assert results["logprobs"] == ("unsupported", "400 unsupported_parameter (top_logprobs): "
                                                  "Logprobs is not supported by model 'conf-anthropic'.")
    chat = _results(runner.run(deployment.url, "conf-openai-chat", api_key=MASTER_KEY, timeout=20,
                               scenarios="reasoning"))
    assert chat["reasoning"][0] == "unsupported"
    assert "without encrypted_content" in chat["reasoning"][1]


def test_command_prints_the_table(deployment: RunningGateway) -> None:
    done = _command("--base-url", deployment.url, "--model", "conf-bedrock", env={"SLUICE_API_KEY": MASTER_KEY})

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"sluice conformance: model conf-bedrock at {deployment.url}/v1 (openai ")
    assert lines[2].split() == ["SCENARIO", "RESULT", "TIME", "DETAIL"]
    rows = {line.split()[0]: line.split()[1] for line in lines[3:3 + len(runner.SCENARIOS)]}
    assert rows == {name: "unsupported" if name == "logprobs" else "ok" for name in runner.SCENARIOS}
    assert lines[-1] == f"{len(runner.SCENARIOS) - 1} ok, 1 unsupported, 0 failed"


def test_broken_deployment_fails_naming_the_scenarios(deployment: RunningGateway) -> None:
    done = _command("--base-url", f"{deployment.url}/v1/", "--model", "conf-broken", "--api-key", MASTER_KEY)

    assert done.returncode == 1, done.stdout + done.stderr
    failing = [name for name in runner.SCENARIOS if name != "errors"]  # errors never reach the upstream
    assert done.stdout.splitlines()[-1] == f"FAILED: {', '.join(failing)}"
    rows = [line.split(None, 3) for line in done.stdout.splitlines()[3:3 + len(runner.SCENARIOS)]]
    assert {row[0]: row[1] for row in rows} == {name: "FAILED" if name in failing else "ok"
                                                  for name in runner.SCENARIOS}
    create = next(row[3] for row in rows if row[0] == "create")
    assert create.startswith("responses.create: HTTP ")


def test_a_wrong_answer_is_a_failure_too(deployment: RunningGateway, capsys: pytest.CaptureFixture[str]) -> None:
    from sluice.cli import main

    status = main(["conformance", "--base-url", deployment.url, "--model", "conf-wrong-tool", "--api-key", MASTER_KEY,
                   "--scenarios", "tool_loop,create", "--json"])

    assert status == 1
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is False and report["failed"] == ["tool_loop"]
    assert [r["scenario"] for r in report["results"]] == ["create", "tool_loop"]
    assert report["results"][1]["detail"] == "turn 1: a call to 'get_capital', which is not a declared tool"
    assert report["results"][0]["result"] == "ok" and report["results"][0]["seconds"] > 0


def test_checks_hold_any_deployment_to_the_sdk_types() -> None:
    """Pointed at a Responses server that is not Sluice: a Response without created_at, a stream with a gap."""

    def off_spec(request: ReceivedRequest) -> Exchange:
        # Recorded OpenAI answers, brought up to the SDK's current usage type (cache_write_tokens), then broken.
        if (request.json or {}).get("stream"):
            exchange = rec("openai-responses/simonw-llm/test_responses_basic_streaming.yaml")
            body = exchange.body.replace(b'"cached_tokens":0}', b'"cached_tokens":0,"cache_write_tokens":0}')
            blocks = body.split(b"\n\n")
            del blocks[1]  # response.in_progress, sequence_number 1
            return Exchange("POST", "/", None, 200, exchange.headers, b"\n\n".join(blocks), True)
        body = rec("openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml").json()
        body["usage"]["input_tokens_details"]["cache_write_tokens"] = 0
        del body["created_at"]
        return json_answer(body)

    with ScriptedUpstream(off_spec) as server:
        report = runner.run(server.url, "gpt-5.2", scenarios=["stream", "create"], timeout=20)
    assert _results(report) == {
        "create": ("failed", "responses.create: the response does not validate against the SDK's types: "
                             "created_at: Field required"),
        "stream": ("failed", "responses.stream: sequence_number does not count 0, 1, 2, ...: "
                             "[0, 2, 3, 4, 5, 6, 7, 8]..."),
    }


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from sluice.cli import main

    assert main(["conformance", "--base-url", "http://127.0.0.1:9", "--model", "m", "--scenarios", "create,nope"]) == 2
    assert "unknown scenario nope; choose from create, stream," in capsys.readouterr().err
    assert main(["conformance", "--base-url", "127.0.0.1:9", "--model", "m"]) == 2
    assert "--base-url must be an http:// or https:// URL" in capsys.readouterr().err


def test_unreachable_deployment_fails(capsys: pytest.CaptureFixture[str]) -> None:
    from sluice.cli import main

    assert main(["conformance", "--base-url", "http://127.0.0.1:9", "--model", "m", "--scenarios", "create"]) == 1
    out = capsys.readouterr().out
    assert "create     FAILED" in out and "Connection" in out and out.rstrip().endswith("FAILED: create")


def test_missing_sdk_is_a_clear_message() -> None:
    code = ("import sys; sys.modules['openai'] = None; from sluice.cli import main; "
            "sys.exit(main(['conformance', '--base-url', 'http://127.0.0.1:9', '--model', 'm']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "sluice conformance needs the openai SDK" in done.stderr
    assert "pip install 'sluice[conformance]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_gateway_never_imports_the_sdk() -> None:
    """Every module of the gateway (all of sluice but the conformance scenarios) loads without openai."""
    code = """
import importlib, pkgutil, sys
import sluice
for module in pkgutil.walk_packages(sluice.__path__, "sluice."):
    if module.name not in ("sluice.__main__", "sluice.conformance.scenarios"):
        importlib.import_module(module.name)
from sluice.cli import main
try:
    main(["conformance", "--help"])
except SystemExit:
    pass
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("openai", "pydantic"))
print(loaded)
sys.exit(1 if loaded else 0)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_conformance_extra_declares_the_sdk() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("openai") for dep in project["optional-dependencies"]["conformance"])
    assert any(dep.startswith("pydantic") for dep in project["optional-dependencies"]["conformance"])
    assert not any(dep.startswith(("openai", "pydantic")) for dep in project["dependencies"])
