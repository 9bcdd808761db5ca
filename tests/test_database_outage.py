"""The database goes away (stopped, or frozen mid-conversation) and comes back, under a running gateway.

Clients get a fast 503 with Retry-After in OpenAI's error shape, never a 500 or a hang; keys the
gateway already knows keep working; /health stays 200 and /ready says 503; everything recovers
when the database does. On a private PostgreSQL cluster the test starts and stops itself.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from sluice.http import auth as auth_module
from sluice.state.db import create_engine, migrate
from sluice.state.keys import KeyStore, new_key
from tests.conftest import RunningGateway, running_gateway
from tests.pg_cluster import PrivateCluster, postgres_bin, private_cluster
from tests.test_database import migrate_concurrently


def _can_run_initdb() -> bool:
    if postgres_bin() is None:
        return False
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
    return True


pytestmark = pytest.mark.skipif(not _can_run_initdb(), reason="PostgreSQL's initdb is not installed")


@pytest.fixture(scope="module")
def pg() -> Iterator[PrivateCluster]:
    with private_cluster() as cluster:
        yield cluster


def _create_keys(url: str, *names: str) -> list[str]:
    async def create() -> list[str]:
        engine = create_engine(url)
        try:
            await migrate(engine)
            store = KeyStore(engine)
            return [await store.create(name) for name in names]
        finally:
            await engine.dispose()

    return asyncio.run(create())


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _models(gw: RunningGateway, key: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{gw.url}/v1/models", headers=headers, timeout=30)


def _assert_unavailable(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["retry-after"]) >= 1
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "key_store_unavailable"


def _check_outage(gw: RunningGateway, known: str, unknown: str) -> None:
    """What a client sees while the database cannot answer."""
    # Never a hang: the bug was >= 70 s. Timeouts here are 1 s; 5 s leaves room for a loaded machine.
    started = time.monotonic()
    _assert_unavailable(_models(gw, unknown))  # a real key the gateway has not seen yet
    assert time.monotonic() - started < 5
    started = time.monotonic()
    _assert_unavailable(_models(gw, new_key()))  # a well-formed key nobody created
    assert time.monotonic() - started < 5
    assert _models(gw, "sk-sluice-" + "x" * 12).status_code == 401  # malformed: refused without the database
    assert _models(gw, known).status_code == 200  # seen before the outage: still works
    assert _models(gw, None).status_code == 401  # keys exist, so no key is no access, outage or not
    assert httpx.get(f"{gw.url}/health", timeout=5).status_code == 200  # alive
    started = time.monotonic()
    ready = httpx.get(f"{gw.url}/ready", timeout=30)
    assert ready.status_code == 503 and time.monotonic() - started < 5


def test_database_outage_and_recovery(pg: PrivateCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Cached keys expire almost at once, so "still works" below means "served stale from the cache".
    monkeypatch.setattr(auth_module, "_VALID_TTL", 0.5)
    known, unseen_a, unseen_b = _create_keys(pg.url, "known", "unseen-a", "unseen-b")
    config_text = (f'database: {{url: "{pg.url}", connect_timeout: 1, statement_timeout: 1}}\n'
                   "builtin_catalog: false\n")
    config = tmp_path / "sluice.yaml"
    config.write_text(config_text)
    with running_gateway(config_text) as gw:
        assert _models(gw, known).status_code == 200
        assert httpx.get(f"{gw.url}/ready", timeout=10).json() == {"status": "ready"}
        time.sleep(0.6)  # the cache entry for `known` is past its TTL now

        pg.stop()
        _check_outage(gw, known, unseen_a)
        # The CLI says what is wrong in one line, without a traceback, and fails.
        cli = subprocess.run([sys.executable, "-m", "sluice", "--config", str(config), "keys", "list"],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode != 0
        assert "Traceback" not in cli.stderr and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
        assert "database" in cli.stderr

        pg.start()
        _until(lambda: _models(gw, unseen_a).status_code == 200, 15, "keys did not work again after the restart")
        _until(lambda: httpx.get(f"{gw.url}/ready", timeout=10).status_code == 200, 10, "/ready did not recover")
        time.sleep(0.6)

        pg.freeze()  # connections stay open, nothing answers: the case that used to hang
        try:
            _check_outage(gw, known, unseen_b)
        finally:
            pg.thaw()
        _until(lambda: _models(gw, unseen_b).status_code == 200, 15, "keys did not work again after the thaw")
        _until(lambda: httpx.get(f"{gw.url}/ready", timeout=10).status_code == 200, 10, "/ready did not recover")


def test_concurrent_migrations_on_postgresql(pg: PrivateCluster) -> None:
    """Several processes (here threads, each with its own engine) migrating one fresh database at once."""

    async def admin(statement: str) -> None:
        engine = sa.ext.asyncio.create_async_engine(pg.url.replace("postgresql://", "postgresql+asyncpg://"),
                                                    isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
        await engine.dispose()

    for _ in range(2):
        name = f"fresh_{uuid.uuid4().hex[:8]}"
        asyncio.run(admin(f"CREATE DATABASE {name}"))
        errors = migrate_concurrently(pg.url.rsplit("/", 1)[0] + "/" + name, 6)
        assert errors == []
