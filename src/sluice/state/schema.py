"""Sluice's schema, versioned: the code that applies the Alembic scripts in `migrations/`.

`sluice.state.db.migrate` is the entry point. This module imports Alembic only when there is
something to do: a database already at `HEAD` is checked with two small queries, so `serve`
start and every worker's startup do not pay Alembic's import time (~80 ms).

`migrations/` is a directory of scripts, not a package: Alembic runs its `env.py`, and importing
it would run it too. Adding a migration: write `migrations/versions/NNNN_what.py` (`revision =
"NNNN"`, `down_revision` the previous one), change the tables in `sluice.state.db` to match, and
set `HEAD` below. The tests check that `HEAD` is the scripts' head and that the migrated schema
equals the metadata (docs/state.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config

# Not Alembic's default `alembic_version`: a PostgreSQL database may be shared with another
# Alembic-managed application, whose revisions Sluice must neither read nor overwrite.
VERSION_TABLE = "sluice_alembic_version"
# The schema Sluice created before it had migrations (`api_keys`): such a database is stamped
# with this revision, not created again.
BASELINE = "0001"
BASELINE_TABLES = frozenset({"api_keys"})
HEAD = "0001"

SCRIPTS = Path(__file__).resolve().parent / "migrations"


class SchemaError(Exception):
    """The database's schema is not one this version of Sluice can use or migrate."""


@dataclass(frozen=True, slots=True)
class Migration:
    """What `migrate` found and did."""

    before: str | None  # the revision found; None for an empty (or pre-migrations) database
    after: str
    adopted: bool = False  # a pre-migrations schema was stamped with BASELINE

    @property
    def changed(self) -> bool:
        return self.adopted or self.before != self.after


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration, built in code: no alembic.ini, scripts inside the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    if connection is not None:
        config.attributes["connection"] = connection  # env.py runs on it, in its transaction
    return config


def current_revision(conn: sa.Connection) -> str | None:
    """The revision the database is at; None if it has no version table (or an empty one)."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    revisions = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(revisions) > 1:  # branches: Sluice's history is linear
        raise SchemaError(f"the database has several schema revisions ({', '.join(sorted(revisions))})")
    return revisions[0] if revisions else None


def unversioned_tables(conn: sa.Connection) -> set[str]:
    """The baseline's tables present in a database that has no revision: a pre-migrations schema."""
    return BASELINE_TABLES & set(sa.inspect(conn).get_table_names())


def pending(revision: str | None) -> list[str]:
    """The revisions an upgrade from `revision` to head would apply, oldest first."""
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util.exc import CommandError

    scripts = ScriptDirectory.from_config(alembic_config())
    try:
        steps = list(scripts.iterate_revisions("head", revision))
    except (CommandError, RevisionError) as exc:
        raise _unknown(revision) from exc
    return [step.revision for step in reversed(steps)]


def upgrade(conn: sa.Connection) -> Migration:
    """Bring the schema to head on `conn`, inside its transaction (the caller holds the lock and commits)."""
    from alembic import command
    from alembic.util.exc import CommandError

    before = current_revision(conn)
    config = alembic_config(conn)
    adopted = False
    if before is None and unversioned_tables(conn):
        # Made by Sluice before migrations existed: that schema is the baseline revision.
        missing = BASELINE_TABLES - unversioned_tables(conn)
        if missing:
            raise SchemaError(f"the database has part of Sluice's schema, without {', '.join(sorted(missing))}")
        command.stamp(config, BASELINE)
        adopted = True
    try:
        command.upgrade(config, "head")
    except CommandError as exc:
        if "Can't locate revision" in str(exc):
            raise _unknown(before) from exc
        raise
    return Migration(before, current_revision(conn) or "", adopted)


def _unknown(revision: str | None) -> SchemaError:
    return SchemaError(f"the database's schema is at revision {revision!r}, which this version of Sluice "
                       "does not know (was it migrated by a newer Sluice?)")
