"""`sluice serve` as a user runs it: a real process, several workers, a clear error for bad config."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_with_two_workers(tmp_path: Path) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text(f"database: sqlite:///{tmp_path / 'sluice.db'}\nmaster_key: sk-test-serve\n"
                      "builtin_catalog: false\n")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sluice", "serve", "--config", str(config), "--port", str(port),
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not come up"
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.2)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) >= 2, "expected one process per worker"
        resp = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"authorization": "Bearer sk-test-serve"})
        assert resp.status_code == 200 and resp.json() == {"object": "list", "data": []}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_serve_refuses_a_broken_config(tmp_path: Path) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text("models:\n  m:\n    routes:\n      - {provider: nowhere, model: x}\n")
    result = subprocess.run([sys.executable, "-m", "sluice", "serve", "--config", str(config),
                             "--port", str(_free_port())], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "nowhere" in result.stderr
