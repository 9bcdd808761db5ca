"""Versioned schema migrations (Alembic), on SQLite and on PostgreSQL: a fresh database, a second run, a
database made before migrations existed, several processes migrating at once, and `sluice migrate`."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from sluice.state import db, schema
from sluice.state.db import create_engine, metadata, migrate
from sluice.state.keys import KeyStore
from sluice.state.schema import BASELINE, HEAD, VERSION_TABLE, Migration, alembic_config
from tests.pg_shared import fresh_database
from tests.test_database import migrate_concurrently

# The baseline as Sluice created it before migrations: `metadata.create_all`-style DDL of this table.
# A frozen copy, so the adoption test keeps testing *that* schema as the metadata grows.
_OLD = sa.MetaData()
sa.Table(
    "api_keys",
    _OLD,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sluice.db'}"
    else:
        with fresh_database() as pg_url:
            yield pg_url


def _with_engine(url: str, work: Callable[[Any], Any]) -> Any:
    async def run() -> Any:
        engine = create_engine(url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _schema_diff(url: str) -> list[Any]:
    """Alembic autogenerate's diff between the database and the metadata the queries use."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    def compare(conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True})
        return compare_metadata(context, metadata)

    async def work(engine: Any) -> list[Any]:
        async with engine.connect() as conn:
            return await conn.run_sync(compare)

    return _with_engine(url, work)


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    async def work(engine: Any) -> list[tuple[Any, ...]]:
        async with engine.connect() as conn:
            return [tuple(row) for row in await conn.execute(sa.text(sql))]

    return _with_engine(url, work)


def test_head_is_the_scripts_head() -> None:
    """`HEAD` (what the fast path compares with, without importing Alembic) is the scripts' one head."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_heads() == [HEAD], "set sluice.state.schema.HEAD to the newest revision"
    assert scripts.get_base() == BASELINE


def test_fresh_database_and_a_second_run(url: str) -> None:
    first = _with_engine(url, migrate)
    assert first == Migration(None, HEAD)
    assert _with_engine(url, migrate) == Migration(HEAD, HEAD)  # idempotent: nothing to do
    assert _rows(url, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD,)]
    assert _schema_diff(url) == []  # the migrations build exactly what the metadata describes

    async def use(engine: Any) -> int:
        await KeyStore(engine).create("a")
        return await KeyStore(engine).count_active()

    assert _with_engine(url, use) == 1


def test_schema_diff_sees_drift(url: str) -> None:
    """The check above is not vacuous: a table the migrations lack shows up."""
    _with_engine(url, migrate)
    extra = sa.Table("not_migrated", metadata, sa.Column("id", sa.Integer, primary_key=True))
    try:
        assert [change[0] for change in _schema_diff(url)] == ["add_table"]
    finally:
        metadata.remove(extra)


def test_a_database_from_before_migrations_is_adopted(url: str) -> None:
    async def old_sluice(engine: Any) -> None:  # what `migrate` did before Alembic
        async with engine.begin() as conn:
            for table in _OLD.sorted_tables:
                await conn.execute(CreateTable(table, if_not_exists=True))
            await conn.execute(sa.text("INSERT INTO api_keys (name, key_hash, prefix, created_at) "
                                       "VALUES ('old', :hash, 'sk-sluice-abcd', 1)"), {"hash": "ab" * 32})

    _with_engine(url, old_sluice)
    assert _with_engine(url, migrate) == Migration(None, HEAD, adopted=True)
    assert _rows(url, "SELECT name, revoked_at FROM api_keys") == [("old", None)]  # not recreated
    assert _rows(url, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD,)]
    assert _schema_diff(url) == []
    assert _with_engine(url, migrate) == Migration(HEAD, HEAD)


def test_a_failing_migration_leaves_the_schema_as_it_was(url: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """One transaction on both engines: a revision that fails halfway leaves neither its tables nor its stamp."""
    _with_engine(url, migrate)
    scripts = tmp_path / "migrations"
    shutil.copytree(schema.SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9000_broken.py").write_text(
        f"import sqlalchemy as sa\nfrom alembic import op\nrevision = '9000'\ndown_revision = {HEAD!r}\n"
        "def upgrade():\n"
        "    op.create_table('half_done', sa.Column('id', sa.Integer, primary_key=True))\n"
        "    op.execute('SELECT * FROM no_such_table')\n")
    monkeypatch.setattr(schema, "SCRIPTS", scripts)
    monkeypatch.setattr(db, "HEAD", "9000")
    with pytest.raises(sa.exc.DBAPIError):
        _with_engine(url, migrate)
    assert _rows(url, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD,)]
    assert _schema_diff(url) == []  # no `half_done`


def test_concurrent_migrations(url: str) -> None:
    """Engines (processes, in effect) migrating one fresh database at the same moment: all succeed."""
    assert migrate_concurrently(url, 6) == []
    assert _rows(url, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD,)]


def test_concurrent_migrations_of_different_databases_in_one_process(tmp_path: Path) -> None:
    """Alembic keeps its running migration in module globals: migrations of two databases in one process
    take turns instead of sharing them."""
    errors: list[str] = []

    def one(index: int) -> None:
        try:
            assert _with_engine(f"sqlite:///{tmp_path / f'db-{index}.db'}", migrate) == Migration(None, HEAD)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []


def _sluice(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sluice", "--config", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_sluice_migrate_processes(url: str, tmp_path: Path) -> None:
    """Separate processes: exactly one migrates, the others wait for its lock and find head."""
    config = tmp_path / "sluice.yaml"
    config.write_text(f"database: {url}\n")
    procs = [_sluice(config, "migrate") for _ in range(3)]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    said = sorted(out.strip().split(": ", 1)[1] for out, _ in outputs)
    assert said == [f"at revision {HEAD} (head), nothing to do"] * 2 + [
        f"migrated from an empty database to revision {HEAD} (head)"], outputs


def test_sluice_migrate_says_what_it_did(url: str, tmp_path: Path) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text(f"database: {url}\n")

    def run(*args: str) -> str:
        out, err = _sluice(config, "migrate", *args).communicate(timeout=60)
        assert not err, err
        return out.strip()

    assert run("--status").endswith(f"empty; 1 pending ({HEAD}), head {HEAD}: run `sluice migrate`")
    assert run().endswith(f"migrated from an empty database to revision {HEAD} (head)")
    assert run().endswith(f"at revision {HEAD} (head), nothing to do")
    assert run("--status").endswith(f"at revision {HEAD} (head), up to date")

    # A schema from a newer Sluice: one clear line, no traceback, nonzero; serve refuses it the same way.
    _with_engine(url, lambda engine: _set_revision(engine, "9999"))
    for args in (("migrate",), ("migrate", "--status"), ("serve", "--port", "1")):
        proc = _sluice(config, *args)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, (out, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "revision '9999'" in err and "newer Sluice" in err


async def _set_revision(engine: Any, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = :r"), {"r": revision})


def test_sluice_migrate_reports_an_unreachable_database_without_its_password(tmp_path: Path) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text("database: {url: 'postgresql://sluice:hunter2@127.0.0.1:1/db', connect_timeout: 2}\n")
    for args in ((), ("--status",)):
        started = time.monotonic()
        proc = _sluice(config, "migrate", *args)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and not out
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "hunter2" not in err and "127.0.0.1:1" in err and "database" in err
        assert time.monotonic() - started < 20


def test_serve_migrates_at_start(tmp_path: Path) -> None:
    """`serve` applies the migrations before it starts (here: adopts an old database) and says so in its log."""
    db = tmp_path / "sluice.db"
    url = f"sqlite:///{db}"

    async def old_sluice(engine: Any) -> None:
        async with engine.begin() as conn:
            await conn.execute(CreateTable(_OLD.tables["api_keys"]))

    _with_engine(url, old_sluice)
    config = tmp_path / "sluice.yaml"
    config.write_text(f"database: {url}\nbuiltin_catalog: false\nserver: {{host: 256.0.0.1}}\n")
    # An address nothing can bind: the server stops right after the migrations.
    proc = _sluice(config, "serve", "--port", "1")
    _, err = proc.communicate(timeout=60)
    assert f"adopted the schema made before migrations as revision {BASELINE}" in err, err
    assert _rows(url, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD,)]
    assert os.path.exists(db)
