"""A real gateway on loopback, in front of a replay server that plays recorded provider traffic."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from sluice.config import parse_config
from sluice.http.app import SluiceApp
from sluice.http.server import uvicorn_options
from tests.replay.server import ReplayServer

MASTER_KEY = "sk-test-master"

CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
providers:
  replay-openai:
    type: openai
    base_url: {upstream}/v1
    api_key: sk-upstream-secret-openai-0000
  replay-chat:
    type: openai-chat
    base_url: {upstream}/v1
    api_key: sk-upstream-secret-chat-0000
  replay-chat-strict:
    type: openai-chat
    base_url: {upstream}/v1
    api_key: sk-upstream-secret-chat-0000
    unsupported_tools: refuse
  dead:
    type: openai-chat
    base_url: http://127.0.0.1:{dead_port}/v1
    api_key: sk-upstream-secret-dead-0000
    connect_timeout: 2
models:
  gpt-5.2:
    aliases: [gpt5]
    owned_by: openai
    context_window: 400000
    capabilities: [tools, parallel_tool_calls, images, files, json_schema, reasoning, logprobs]
    routes:
      - provider: replay-openai
        model: gpt-5.2
        price: {{input: 1.75, cached_input: 0.175, output: 14.0}}
  chat-model:
    aliases: [chat]
    routes:
      - provider: replay-chat
        model: gpt-4o-2024-08-06
        price: {{input: 2.5, cached_input: 1.25, output: 10.0}}
  chat-strict:
    routes:
      - provider: replay-chat-strict
        model: gpt-4o-2024-08-06
  failover-model:
    routes:
      - provider: dead
        model: gpt-4o
      - provider: replay-chat
        model: gpt-4o
        price: {{input: 2.5, output: 10.0}}
  dead-model:
    routes:
      - provider: dead
        model: gpt-4o
  text-only:
    capabilities: []
    routes:
      - provider: replay-chat
        model: small
"""


def wait_for_health(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until a `sluice serve` process answers `GET /health`; fails if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the gateway did not come up"
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "the gateway exited"
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def upstream() -> Iterator[ReplayServer]:
    with ReplayServer() as server:
        yield server


class RunningGateway:
    def __init__(self, url: str, app: SluiceApp) -> None:
        self.url = url
        self.app = app


# Gateways alive now: each test starts with their routing memory wiped (below).
_LIVE_APPS: list[SluiceApp] = []


@pytest.fixture(autouse=True)
def _fresh_routing_memory() -> None:
    """Many tests share a gateway and fail its routes on purpose; what one test's failures taught
    the gateway (cooldowns, affinity, latency) must not steer the next test's routing. Tests of
    that memory itself (test_cooldowns.py, test_live_metrics.py, ...) build it within one test."""
    for app in _LIVE_APPS:
        if app.pipeline is not None:
            app.pipeline.live.reset()


@contextlib.contextmanager
def running_gateway(config_text: str) -> Iterator[RunningGateway]:
    """A gateway with this config, serving on a free loopback port until the block ends."""
    app = SluiceApp(parse_config(config_text))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", access_log=False, **uvicorn_options(app.config.server)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    _LIVE_APPS.append(app)
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", app)
    finally:
        _LIVE_APPS.remove(app)
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def gateway(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = Path(tmp_path_factory.mktemp("db")) / "sluice.db"
    text = CONFIG.format(db=db, master=MASTER_KEY, upstream=upstream.url, dead_port=_free_port())
    with running_gateway(text) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: ReplayServer) -> None:
    upstream.reset()


@pytest.fixture
def client(gateway: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)
