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

from tests.conftest import wait_for_health


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
        wait_for_health(port, proc)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) >= 2, "expected one process per worker"
        resp = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"authorization": "Bearer sk-test-serve"})
        assert resp.status_code == 200 and resp.json() == {"object": "list", "data": []}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def _start(config: Path, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "sluice", "serve", "--config", str(config), "--port", str(port),
                                 "--workers", str(workers)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def test_fresh_database_multi_worker_starts(tmp_path: Path) -> None:
    """Workers starting together on a fresh database used to race to create its tables; one lost and stopped all."""
    for attempt in range(10):
        config = tmp_path / f"sluice-{attempt}.yaml"
        config.write_text(f"database: sqlite:///{tmp_path / f'fresh-{attempt}.db'}\nmaster_key: sk-test-serve\n"
                          "builtin_catalog: false\n")
        log = tmp_path / f"serve-{attempt}.log"
        port = _free_port()
        proc = _start(config, port, 3, log)
        try:
            deadline = time.monotonic() + 30
            while log.read_text().count("Application startup complete") < 3:
                assert proc.poll() is None, f"start {attempt} stopped (status {proc.returncode}):\n{log.read_text()}"
                assert time.monotonic() < deadline, f"start {attempt}: workers did not start:\n{log.read_text()}"
                time.sleep(0.05)
            resp = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"authorization": "Bearer sk-test-serve"},
                             timeout=10)
            assert resp.status_code == 200
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # how it stops is not the point here; quick is
            proc.wait(timeout=20)
        assert "Traceback" not in log.read_text()


def test_worker_startup_failure_exits_nonzero(tmp_path: Path) -> None:
    """A supervisor restarts a gateway that exits non-zero; one that exits 0 after its workers failed stays down."""
    root = Path(__file__).resolve().parent.parent
    for workers in (2, 1):
        code = ("import sys; from sluice.cli import run_server; "
                f"sys.exit(run_server('tests.failing_app:create_app', host='127.0.0.1', port={_free_port()}, "
                f"workers={workers}, log_level='info'))")
        result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
        assert "deliberate startup failure" in result.stderr  # the app's startup ran, and failed
        assert result.returncode != 0, result.stderr


def test_serve_refuses_a_broken_config(tmp_path: Path) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text("models:\n  m:\n    routes:\n      - {provider: nowhere, model: x}\n")
    result = subprocess.run([sys.executable, "-m", "sluice", "serve", "--config", str(config),
                             "--port", str(_free_port())], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "nowhere" in result.stderr


def test_serve_refuses_an_unusable_database(tmp_path: Path) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text(f"database: sqlite:///{tmp_path / 'missing-dir' / 'sluice.db'}\n")
    result = subprocess.run([sys.executable, "-m", "sluice", "serve", "--config", str(config), "--workers", "2",
                             "--port", str(_free_port())], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "database" in result.stderr
