"""The real Codex CLI (`codex exec`) through Sluice, in front of each upstream type.

Codex sends its real request — `namespace` tools (`multi_agent_v1`), the freeform `apply_patch`
custom tool (on models whose catalog entry asks for it, e.g. `gpt-5.5`), a hosted `web_search`
with `external_web_access: false`, a client-executed `tool_search`, `client_metadata`,
`prompt_cache_key` — to a gateway whose model routes to one replay upstream. The upstream answers
turn 1 with a call to `apply_patch` and one to `multi_agent_v1__close_agent` (hand-written
recordings `codex-tools.1.chunks.txt` in its wire shape); Codex runs them (read-only sandbox,
approval never: the patch is rejected, the agent id is unknown), sends the results, and turn 2's
answer is the final text Codex prints. Codex must exit 0, and the upstream must have received
function tools under valid names, and its own tool-use / tool-result shapes on turn 2.

Codex is installed from npm by `tests/codex_cli.py` (CI: `.ci/run`); the tests skip only when npm
is missing. No login or network is needed: a custom model provider with an `env_key` and
`--skip-git-repo-check`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.codex_cli import CodexUnavailable, ensure_codex
from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.replay.recordings import load
from tests.replay.server import ReplayServer
from tests.test_codex_tools import FINAL, PATCH, declared, history

OWN = Path(__file__).parent / "recordings"
WIRE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

# upstream -> (provider config, upstream model id, recordings folder)
UPSTREAMS: dict[str, tuple[str, str, str]] = {
    "openai": ("{{type: openai, base_url: '{url}/v1', api_key: k}}", "gpt-5.2-codex", "openai-responses"),
    "chat": ("{{type: openai-chat, base_url: '{url}/v1', api_key: k}}", "gpt-4o", "openai-chat"),
    "anthropic": ("{{type: anthropic, base_url: '{url}', api_key: k}}", "claude-sonnet-4-5", "anthropic"),
    "gemini": ("{{type: gemini, base_url: '{url}', api_key: k}}", "gemini-2.5-flash", "gemini"),
    "bedrock": ("{{type: bedrock, base_url: '{url}', region: us-east-1, api_key: k}}",
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock"),
}
# Codex model names (its catalog decides the tools it sends): gpt-5.5 has the freeform apply_patch
# tool; a name Codex does not know gets its fallback tool set, with the multi_agent_v1 namespace.
CODEX_MODELS = ["gpt-5.5", "gpt-5.1-codex"]


@pytest.fixture(scope="module")
def codex() -> Path:
    try:
        return ensure_codex()
    except CodexUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def gateways(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningGateway]]:
    """One gateway per upstream type, each serving the Codex model names from that upstream."""
    running: dict[str, RunningGateway] = {}
    contexts = []
    try:
        for name, (provider, model, _) in UPSTREAMS.items():
            db = tmp_path_factory.mktemp(f"codex-{name}") / "sluice.db"
            models = "\n".join(f"  {m}: {{routes: [{{provider: up, model: '{model}'}}]}}" for m in CODEX_MODELS)
            config = (f"database: sqlite:///{db}\nmaster_key: {MASTER_KEY}\nbuiltin_catalog: false\n"
                      f"providers:\n  up: {provider.format(url=upstream.url)}\nmodels:\n{models}\n")
            context = running_gateway(config)
            running[name] = context.__enter__()
            contexts.append(context)
        yield running
    finally:
        for context in reversed(contexts):
            context.__exit__(None, None, None)


def run_codex(codex: Path, gateway: RunningGateway, model: str, home: Path) -> subprocess.CompletedProcess[str]:
    codex_home, work = home / "codex-home", home / "work"
    codex_home.mkdir(parents=True)
    work.mkdir()
    (codex_home / "config.toml").write_text(f"""
model = "{model}"
model_provider = "sluice"
approval_policy = "never"
sandbox_mode = "read-only"

[model_providers.sluice]
name = "Sluice"
base_url = "{gateway.url}/v1"
wire_api = "responses"
env_key = "SLUICE_CODEX_TEST_KEY"
request_max_retries = 0
stream_max_retries = 0
""")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "CODEX_HOME": str(codex_home),
           "SLUICE_CODEX_TEST_KEY": MASTER_KEY, "NO_COLOR": "1", "LANG": "C.UTF-8"}
    return subprocess.run([str(codex), "exec", "--skip-git-repo-check", "-C", str(work),
                           "Add hello.txt, then close the agent."],
                          env=env, cwd=work, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("model", CODEX_MODELS)
@pytest.mark.parametrize("name", list(UPSTREAMS))
def test_codex_exec_through_every_upstream(codex: Path, gateways: dict[str, RunningGateway], upstream: ReplayServer,
                                           tmp_path: Path, name: str, model: str) -> None:
    folder = UPSTREAMS[name][2]
    for turn in (1, 2):
        upstream.enqueue(load(OWN / folder / f"codex-tools.{turn}.chunks.txt", provider=folder))
    done = run_codex(codex, gateways[name], model, tmp_path)
    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, report
    assert FINAL in done.stdout, report
    assert len(upstream.requests) == 2, report

    first: dict[str, Any] = upstream.requests[0].json
    second: dict[str, Any] = upstream.requests[1].json
    if name == "openai":
        # OpenAI's own protocol: Codex's tools go as they are.
        kinds = {tool["type"] for tool in first["tools"]}
        assert "web_search" in kinds and ("custom" in kinds or "namespace" in kinds)
        assert "client_metadata" in first and "prompt_cache_key" in first
        types = [item["type"] for item in second["input"]]
        assert "custom_tool_call_output" in types and "function_call_output" in types
        return
    model_key = "chat" if name == "chat" else name
    tools = declared(model_key, first)
    assert tools and all(WIRE_NAME.match(tool) for tool in tools), list(tools)
    assert "exec_command" in tools
    if model == "gpt-5.5":
        assert '"input"' in json.dumps(tools["apply_patch"])  # the freeform tool, as a function of `input`
    else:
        assert {"multi_agent_v1__close_agent", "multi_agent_v1__spawn_agent"} <= set(tools)
    body = json.dumps(first)
    assert '"web_search' not in body and "tool_search" not in body and "client_metadata" not in body
    # Turn 2: both calls and Codex's results for them, in the upstream's own shapes.
    calls, results = history(model_key, second)
    assert ("apply_patch", {"input": PATCH}) in calls
    assert ("multi_agent_v1__close_agent", {"target": "nobody"}) in calls
    assert len(results) == 2
