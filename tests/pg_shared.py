"""PostgreSQL for the tests: the shared server at 127.0.0.1:5432 (trust auth; `.ci/run` starts it).

Each test gets a database of its own, created from the `test` database under a unique name and
dropped afterwards, so concurrent runs never see each other's tables. Tests that stop or freeze
the server use a private cluster instead (`tests.pg_cluster`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

SHARED_URL = os.environ.get("SLUICE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _admin(statement: str) -> None:
    async def run() -> None:
        engine = create_async_engine(SHARED_URL.replace("postgresql://", "postgresql+asyncpg://", 1),
                                     isolation_level="AUTOCOMMIT", connect_args={"timeout": 5})
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """The URL (plain `postgresql://`, as a config has it) of a new, empty database; skips without a server."""
    name = f"sluice_test_{uuid.uuid4().hex[:12]}"
    try:
        _admin(f"CREATE DATABASE {name}")
    except (OSError, sa.exc.DBAPIError) as exc:
        pytest.skip(f"no PostgreSQL at {SHARED_URL} (.ci/run starts one): {type(exc).__name__}")
    try:
        yield SHARED_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
