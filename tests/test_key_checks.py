"""What a key check costs: malformed keys never reach the database, wrong ones reach it once, caches stay bounded.

Also: keys from before the checksum still work, /ready answers a probe storm from its cache, and a
gateway started open closes by itself once a key exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from sluice.config import parse_config
from sluice.errors import Unauthorized
from sluice.http.auth import Authenticator
from sluice.state.db import api_keys, create_engine, migrate
from sluice.state.keys import KeyStore, Principal, key_format, new_key
from tests.conftest import RunningGateway, running_gateway


def _config(db: Path) -> str:
    return f"database: sqlite:///{db}\nbuiltin_catalog: false\n"


def _store(db: Path, work: Any) -> Any:
    """Run `work(store)` against the database file, as the CLI would, from outside the gateway."""

    async def run() -> Any:
        engine = create_engine(f"sqlite:///{db}")
        try:
            await migrate(engine)
            return await work(KeyStore(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture
def keyed_gateway(tmp_path: Path) -> Iterator[tuple[RunningGateway, str, list[str]]]:
    """A gateway whose database has one key; yields it, the key, and every statement it runs from now on."""
    db = tmp_path / "keys.db"
    key = _store(db, lambda store: store.create("team-a"))
    with running_gateway(_config(db)) as gw:
        statements: list[str] = []
        sa.event.listen(gw.app._engine.sync_engine, "before_cursor_execute",
                        lambda conn, cursor, statement, *rest: statements.append(statement))
        yield gw, key, statements


_http = httpx.Client(timeout=10)  # one client: a new one per request costs more than the request


def _status(gw: RunningGateway, key: str) -> int:
    return _http.get(f"{gw.url}/v1/models", headers={"authorization": f"Bearer {key}"}).status_code


def test_key_format_catches_typos() -> None:
    key = new_key()
    assert key.startswith("sk-sluice-") and key_format(key) == "current"
    body = key[len("sk-sluice-") :]
    for i in range(len(body)):  # every single-character change of the token or the checksum is caught
        changed = "a" if body[i] != "a" else "b"
        assert key_format("sk-sluice-" + body[:i] + changed + body[i + 1 :]) is None
    assert key_format(key[:-1]) is None and key_format(key + "0") is None
    assert key_format("sk-sluice-" + secrets.token_urlsafe(32)) == "legacy"  # the format before the checksum
    assert key_format("sk-sluice-" + "x" * 12) is None
    assert key_format("sk-other-" + body) is None


def test_malformed_keys_never_reach_the_database(keyed_gateway: tuple[RunningGateway, str, list[str]]) -> None:
    gw, key, statements = keyed_gateway
    assert _status(gw, key) == 200
    lookups = len(statements)
    malformed = [
        key[:-1] + ("a" if key[-1] != "a" else "b"),  # mistyped checksum
        key[:20] + ("a" if key[20] != "a" else "b") + key[21:],  # mistyped token
        key[:-1],  # truncated
        "sk-sluice-",
        "sk-sluice-" + "x" * 12,
        "sk-sluice-" + "!" * 43,
        *("sk-sluice-" + secrets.token_hex(24) + "zz" for _ in range(50)),  # made-up, all distinct
    ]
    for wrong in malformed:
        assert _status(gw, wrong) == 401
    assert statements[lookups:] == []

    # A well-formed key nobody created costs one lookup; asking again is answered from the cache.
    unknown = new_key()
    assert _status(gw, unknown) == 401
    assert _status(gw, unknown) == 401
    assert len(statements) == lookups + 1


def test_keys_from_before_the_checksum_still_work(tmp_path: Path) -> None:
    db = tmp_path / "legacy.db"
    legacy = "sk-sluice-" + secrets.token_urlsafe(32)  # how `sluice keys create` made keys before

    async def insert(store: KeyStore) -> None:
        digest = hashlib.sha256(legacy.encode()).hexdigest()
        async with store.engine.begin() as conn:
            await conn.execute(api_keys.insert().values(name="old", key_hash=digest, prefix=legacy[:14],
                                                        created_at=int(time.time())))

    _store(db, insert)
    with running_gateway(_config(db)) as gw:
        assert _status(gw, legacy) == 200
        assert _status(gw, legacy[:-1] + ("A" if legacy[-1] != "A" else "B")) == 401


class _CountingStore:
    """A key store that knows one key and counts how often it is asked."""

    def __init__(self, key: str) -> None:
        self.known = hashlib.sha256(key.encode()).hexdigest()
        self.finds = 0

    async def count_active(self) -> int:
        return 1

    async def find(self, key_hash: str) -> Principal | None:
        self.finds += 1
        return Principal("known", 1) if key_hash == self.known else None


def test_unknown_key_cache_is_bounded_and_short_lived() -> None:
    known = new_key()
    store = _CountingStore(known)
    now = [1000.0]
    auth = Authenticator(parse_config("builtin_catalog: false"), engine=None, keys=store,  # type: ignore[arg-type]
                         clock=lambda: now[0])

    async def check(key: str) -> bool:
        scope = {"headers": [(b"authorization", f"Bearer {key}".encode())]}
        try:
            await auth.authenticate(scope)
            return True
        except Unauthorized:
            return False

    async def scenario() -> None:
        assert await check(known)
        flood = [new_key() for _ in range(10_500)]
        for key in flood:
            assert not await check(key)
        assert len(auth.unknown) <= 10_000  # bounded, whatever the flood
        assert store.finds == 1 + len(flood)
        assert await check(known) and store.finds == 1 + len(flood)  # the flood did not evict the key in use
        assert not await check(flood[-1]) and store.finds == 1 + len(flood)  # recent wrong key: from the cache
        now[0] += 10  # past the unknown-key TTL: asked again (a key that now exists would work)
        assert not await check(flood[-1]) and store.finds == 2 + len(flood)

    asyncio.run(scenario())


def test_ready_probe_storm_costs_little(keyed_gateway: tuple[RunningGateway, str, list[str]]) -> None:
    gw, _, statements = keyed_gateway
    started = time.monotonic()
    for _ in range(40):
        resp = _http.get(f"{gw.url}/ready")
        assert resp.status_code == 200 and resp.json() == {"status": "ready"}
    elapsed = time.monotonic() - started
    # At most one probe per second (plus the first).
    assert len([s for s in statements if s.strip().upper() == "SELECT 1"]) <= 2 + int(elapsed)
    assert _http.get(f"{gw.url}/health").json() == {"status": "ok"}


def test_open_gateway_closes_once_a_key_exists(tmp_path: Path) -> None:
    db = tmp_path / "open.db"
    config = tmp_path / "sluice.yaml"
    config.write_text(_config(db))
    with running_gateway(_config(db)) as gw:
        assert _http.get(f"{gw.url}/v1/models").status_code == 200  # no master key, no keys: open
        created = subprocess.run([sys.executable, "-m", "sluice", "--config", str(config), "keys", "create",
                                  "--name", "first"], capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        deadline = time.monotonic() + 10
        while _http.get(f"{gw.url}/v1/models").status_code != 401:
            assert time.monotonic() < deadline, "the gateway stayed open after a key was created"
            time.sleep(0.2)
        assert _status(gw, key) == 200
        assert _status(gw, new_key()) == 401
