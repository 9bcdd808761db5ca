"""The SQLite database file: private from the start, its schema safe to create from many processes at once."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from sluice.config import ConfigError, DatabaseConfig, parse_config
from sluice.state.db import create_engine, migrate


def _sluice(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # umask 022, the usual default, under which SQLite alone creates the file world-readable.
    return subprocess.run([sys.executable, "-m", "sluice", "--config", str(config), *args], capture_output=True,
                          text=True, timeout=60, preexec_fn=lambda: os.umask(0o022))


def test_database_config_forms() -> None:
    assert parse_config("").database_config() == DatabaseConfig(url="sqlite:///sluice.db")
    assert parse_config("database: sqlite:///x.db").database_config() == DatabaseConfig(url="sqlite:///x.db")
    mapping = parse_config("database: {url: 'postgresql://u@h/db', connect_timeout: 2, statement_timeout: 0.5}")
    assert mapping.database_config() == DatabaseConfig(url="postgresql://u@h/db", connect_timeout=2,
                                                       statement_timeout=0.5)
    for bad in ("database: {url: x, connect_timeout: 0}", "database: {url: x, timeout: 3}"):
        with pytest.raises(ConfigError):
            parse_config(bad)


def test_database_file_is_private(tmp_path: Path) -> None:
    db = tmp_path / "sluice.db"
    config = tmp_path / "sluice.yaml"
    config.write_text(f"database: sqlite:///{db}\n")
    created = _sluice(config, "keys", "create", "--name", "a")
    assert created.returncode == 0, created.stderr
    assert stat.S_IMODE(db.stat().st_mode) == 0o600

    # The files SQLite writes next to it (-journal, -wal, -shm) hold the same data: private too.
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("UPDATE api_keys SET prefix = prefix")
    conn.commit()
    for companion in (tmp_path / "sluice.db-wal", tmp_path / "sluice.db-shm"):
        assert stat.S_IMODE(companion.stat().st_mode) == 0o600, companion
    conn.close()


def test_concurrent_migrations_on_sqlite(tmp_path: Path) -> None:
    for attempt in range(3):
        assert migrate_concurrently(f"sqlite:///{tmp_path / f'fresh-{attempt}.db'}", 6) == []


def test_keys_cli_reports_an_unusable_database_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text(f"database: sqlite:///{tmp_path / 'no-such-directory' / 'sluice.db'}\n")
    for args in (("keys", "list"), ("keys", "create", "--name", "a"), ("keys", "revoke", "a")):
        result = _sluice(config, *args)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "database" in result.stderr


def migrate_concurrently(url: str, count: int) -> list[str]:
    """`count` engines (processes, in effect) migrating one database at the same moment; their errors."""
    barrier = threading.Barrier(count)
    errors: list[str] = []

    def one() -> None:
        async def run() -> None:
            engine = create_engine(url)
            try:
                async with engine.connect() as conn:  # connected first, so the migrations start together
                    await conn.execute(sa.text("SELECT 1"))
                barrier.wait()
                await migrate(engine)
                async with engine.connect() as conn:
                    await conn.execute(sa.text("SELECT count(*) FROM api_keys"))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                await engine.dispose()

        asyncio.run(run())

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors
