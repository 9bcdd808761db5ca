"""Alembic's environment for Sluice's schema.

At runtime `sluice.state.schema.upgrade` hands over a connection already inside a locked
transaction (`config.attributes["connection"]`); Alembic runs in it and leaves the commit to the
caller. Run through Alembic's own commands without a connection (writing a new revision with
autogenerate), it opens one from the `sqlalchemy.url` main option with Sluice's async engine.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context

from sluice.state.db import metadata
from sluice.state.schema import VERSION_TABLE

config = context.config


def run(connection: sa.Connection) -> None:
    # render_as_batch: SQLite alters a table by copying it; batch mode writes migrations that way.
    context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
                      render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine(url: str) -> None:
    from sluice.state.db import create_engine

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      version_table=VERSION_TABLE, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    run(connection)
else:
    asyncio.run(run_with_own_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///sluice.db"))
