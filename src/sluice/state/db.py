"""Database access through SQLAlchemy Core, async: SQLite (aiosqlite) or PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sluice.config import DatabaseConfig
from sluice.state.schema import (
    BASELINE,
    HEAD,
    Migration,
    SchemaError,
    current_revision,
    pending,
    unversioned_tables,
    upgrade,
)

log = logging.getLogger("sluice")

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
)

# The PostgreSQL advisory lock that serializes schema changes across processes and hosts
# (any fixed 64-bit number; this one spells "sluice").
_MIGRATION_LOCK = 0x736C75696365
_IN_PROCESS = threading.Lock()


def async_url(url: str) -> str:
    """Map the config's plain URLs onto SQLAlchemy's async drivers."""
    if url.startswith("sqlite:///") or url == "sqlite://":
        return "sqlite+aiosqlite" + url[len("sqlite") :]
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+asyncpg://" + url[len(scheme) :]
    return url


def display_url(url: str) -> str:
    """The URL for messages and logs: never its password."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable database URL>"


def describe_error(exc: BaseException) -> str:
    """One line saying why a database call failed, without SQL, parameters or credentials."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig  # SQLAlchemy's text carries the statement and its parameters (e.g. a key hash)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, SchemaError):
        return str(exc)
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def create_engine(database: str | DatabaseConfig) -> AsyncEngine:
    """An engine whose every wait is bounded by the configured timeouts.

    A database that refuses connections fails at once; one that accepts and never answers (a
    frozen host, a full network buffer) fails within the timeouts instead of hanging requests.
    """
    settings = database if isinstance(database, DatabaseConfig) else DatabaseConfig(url=database)
    url = sa.engine.make_url(async_url(settings.url))
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        in_memory = url.database in (None, "", ":memory:")
        if not in_memory:
            _create_private_file(url.database)
            kwargs["pool_timeout"] = settings.connect_timeout  # waiting for a pooled connection
        # sqlite3's `timeout` is the busy timeout: how long a statement waits for another writer.
        kwargs["connect_args"] = {"timeout": settings.statement_timeout}
    elif url.get_driver_name() == "asyncpg":
        kwargs["pool_timeout"] = settings.connect_timeout
        # `command_timeout` is enforced by the client, so it also ends a statement (the pool's
        # pre-ping included) sent to a server that never answers.
        kwargs["connect_args"] = {"timeout": settings.connect_timeout, "command_timeout": settings.statement_timeout}
    return create_async_engine(url, **kwargs)


def _create_private_file(path: str | None) -> None:
    """Create a new SQLite database file readable and writable by its owner only.

    The file holds key hashes (and later, request data). Left to SQLite it would be created
    with the process umask, usually world-readable 0644. SQLite gives the -journal, -wal and
    -shm files the main file's permissions, so creating the main file 0600 covers them too.
    An empty file is a valid, empty SQLite database.
    """
    if not path or path.startswith("file:"):
        return  # SQLite URI filenames: the operator chose how the file is opened
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("the database file %s can be read by other users; `chmod 600` it", path)
        return
    except OSError:
        return  # e.g. a missing directory: SQLite reports it, with its own message, on connect
    os.close(fd)


async def migrate(engine: AsyncEngine) -> Migration:
    """Bring the schema to the newest revision (the Alembic scripts in `state/migrations/`).

    Safe to run from many processes at once, idempotent, and cheap when there is nothing to do.

    A database already at head costs two small queries, no lock and no Alembic import, so every
    worker can call this at startup. Otherwise the upgrade runs in one transaction that holds
    the database's migration lock, and reads the revision again under it: the first process
    migrates, the others wait, then find head and do nothing. On PostgreSQL the lock is a
    transaction-scoped advisory lock; on SQLite it is the write lock `BEGIN IMMEDIATE` takes,
    waited for up to the busy timeout. DDL is transactional on both: a failed migration leaves
    the schema as it was.

    A database created before migrations existed (the baseline's tables, no version table) is
    adopted: stamped with the baseline revision, then upgraded; its rows stay.
    """
    async with engine.connect() as conn:
        current = await conn.run_sync(current_revision)
    if current == HEAD:
        return Migration(current, current)
    # Alembic's `context` and `op` are module globals: one migration per process at a time (two
    # engines on two databases would share them). Taken before the database's lock, always.
    while not _IN_PROCESS.acquire(blocking=False):
        await asyncio.sleep(0.01)  # not a blocking wait: it would stop the event loop the holder runs on
    try:
        async with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                await conn.exec_driver_sql("BEGIN IMMEDIATE")  # the database's write lock, until commit
            elif conn.dialect.name == "postgresql":
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK})
            done = await conn.run_sync(upgrade)
            await conn.commit()
    finally:
        _IN_PROCESS.release()
    if done.changed:
        log.info("database schema: %s", describe_migration(done))
    return done


async def schema_status(engine: AsyncEngine) -> str:
    """Where the schema is and what `migrate` would do, in one line. Changes nothing."""
    async with engine.connect() as conn:
        current = await conn.run_sync(current_revision)
        legacy = await conn.run_sync(unversioned_tables) if current is None else set()
    if current == HEAD:
        return f"at revision {current} (head), up to date"
    if legacy:
        steps = pending(BASELINE)
        what = f"made before migrations ({', '.join(sorted(legacy))}); `sluice migrate` adopts it as {BASELINE}"
        return what + (f" and applies {', '.join(steps)}" if steps else "")
    steps = pending(current)
    where = f"at revision {current}" if current else "empty"
    return f"{where}; {len(steps)} pending ({', '.join(steps)}), head {HEAD}: run `sluice migrate`"


def describe_migration(done: Migration) -> str:
    """What `migrate` did, in one line."""
    if not done.changed:
        return f"at revision {done.after} (head), nothing to do"
    if done.adopted:
        return f"adopted the schema made before migrations as revision {BASELINE}, now at {done.after} (head)"
    return f"migrated from {done.before or 'an empty database'} to revision {done.after} (head)"
