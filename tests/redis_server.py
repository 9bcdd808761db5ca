"""Redis for the tests: the shared server at 127.0.0.1:6379 (started by `.ci/run`), or a private
`redis-server` on a free port that a test may stop and start again."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SHARED_URL = "redis://127.0.0.1:6379"


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)  # the client's default retries for up to seconds; the tests poll themselves


def shared_redis_or_skip() -> redis.Redis:
    """A client of the shared server; the test is skipped when none runs (`.ci/run` starts one)."""
    client = redis.Redis.from_url(SHARED_URL, socket_timeout=2, socket_connect_timeout=2, decode_responses=True,
                                  retry=_no_retry())
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379 (.ci/run starts one)")
    return client


def unique_prefix() -> str:
    """Keys of one test run: concurrent runs on the shared server never see each other's."""
    return f"sluice-test-{uuid.uuid4().hex[:12]}:"


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    for key in client.scan_iter(match=prefix + "*", count=1000):
        client.delete(key)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A `redis-server` of the test's own, on a free port: stopped (killed) and started at will."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1, retry=_no_retry())
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert self.proc.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not come up"
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        """As an outage looks from the gateway: the server is gone at once, connections reset."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server would not die of SIGKILL any later
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def freeze(self) -> None:
        """A hung server (SIGSTOP): connections stay open and nothing answers, as behind a partition."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True,
                           retry=_no_retry())


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
