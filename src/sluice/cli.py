"""`sluice serve` runs the gateway; `sluice migrate` brings the database's schema up to date (serve does too);
`sluice keys create|list|revoke` manages client keys; `sluice conformance` checks a running deployment (see
`sluice.conformance`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from sluice.config import Config, ConfigError, DatabaseConfig, load_config
from sluice.conformance import runner as conformance
from sluice.state.db import create_engine, describe_error, describe_migration, display_url, migrate, schema_status
from sluice.state.keys import KeyStore

APP = "sluice.http.app:create_app"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice LLM gateway")
    parser.add_argument("--config", help="YAML config file (default: $SLUICE_CONFIG, else built-in defaults)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--log-level", help="debug, info, warning, error")

    migrate_cmd = commands.add_parser("migrate", help="bring the database's schema up to date (serve does too)")
    migrate_cmd.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    migrate_cmd.add_argument("--status", action="store_true", help="say where the schema is; change nothing")

    keys = commands.add_parser("keys", help="manage client API keys")
    keys.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    key_commands = keys.add_subparsers(dest="action", required=True)
    create = key_commands.add_parser("create", help="create a key; prints it on the last line")
    create.add_argument("--name", required=True)
    key_commands.add_parser("list", help="list keys (never their values)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")

    conformance.add_parser(commands)

    args = parser.parse_args(argv)
    if args.command == "conformance":  # a client of some deployment: the local config plays no part
        return conformance.command(args)
    config_path = getattr(args, "sub_config", None) or args.config
    if config_path:
        os.environ["SLUICE_CONFIG"] = os.path.abspath(config_path)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(config, args)
    if args.command == "migrate":
        return asyncio.run(_migrate_command(config.database_config(), status=args.status))
    return asyncio.run(_keys(config, args))


def _serve(config: Config, args: argparse.Namespace) -> int:
    from sluice.http.server import raise_nofile_limit, uvicorn_options
    from sluice.routing.catalog import build_catalog

    server = config.server
    host = args.host or server.host
    port = args.port or server.port
    workers = args.workers or server.workers
    log_level = (args.log_level or server.log_level).lower()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_level != "debug":  # Alembic narrates its setup at INFO; Sluice logs what the migration did
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        catalog = build_catalog(config)  # fail fast, before forking workers
    except ConfigError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    database = config.database_config()
    try:
        # Once, here, before any worker exists: workers creating tables at the same moment race.
        asyncio.run(_migrate(database))
    except Exception as exc:
        print(f"sluice: cannot prepare the database {display_url(database.url)}: {describe_error(exc)}",
              file=sys.stderr)
        return 1
    before, after = raise_nofile_limit()  # before sizing max_connections from it; workers inherit it
    if after > before:
        logging.getLogger("sluice").info("raised the open-file limit from %d to %d", before, after)
    print(f"sluice: serving {len(catalog.models)} models from {len(catalog.providers)} providers "
          f"on http://{host}:{port} ({workers} worker{'s' if workers != 1 else ''})", file=sys.stderr)
    return run_server(APP, host=host, port=port, workers=workers, log_level=log_level,
                      options=uvicorn_options(server))


async def _migrate(database: DatabaseConfig) -> None:
    engine = create_engine(database)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


async def _migrate_command(database: DatabaseConfig, *, status: bool) -> int:
    where = display_url(database.url)
    engine = create_engine(database)
    try:
        if status:
            print(f"database {where}: {await schema_status(engine)}")
        else:
            print(f"database {where}: {describe_migration(await migrate(engine))}")
        return 0
    except Exception as exc:
        print(f"sluice: cannot {'read' if status else 'migrate'} the database {where}: {describe_error(exc)}",
              file=sys.stderr)
        return 1
    finally:
        await engine.dispose()


def run_server(app: str, *, host: str, port: int, workers: int, log_level: str,
               options: dict[str, Any] | None = None) -> int:
    """Serve the ASGI app factory `app`; the exit status is non-zero if a worker could not start.

    `uvicorn.run` with several workers returns normally (exit status 0) after a worker fails
    its startup and the supervisor stops the others, so a process manager would not restart
    the gateway. This runs the same supervisor and looks at how its workers ended.
    """
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    uvicorn_config = uvicorn.Config(
        app,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        lifespan="on",
        access_log=False,
        # Each of these costs time on every response; a gateway behind a proxy can turn them on.
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_level=log_level,
        timeout_graceful_shutdown=10,
        **(options or {}),  # the httptools protocol with deadlines and size caps (http/server.py)
    )
    if workers > 1:
        supervisor = Multiprocess(uvicorn_config, sockets=[uvicorn_config.bind_socket()])
        supervisor.run()
        if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
            print("sluice: a worker failed to start (see the log above); stopped", file=sys.stderr)
            return STARTUP_FAILURE
        return 0
    server = uvicorn.Server(uvicorn_config)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits the process when the app's startup fails
        if exc.code:
            print("sluice: the server failed to start (see the log above)", file=sys.stderr)
            return int(exc.code) if isinstance(exc.code, int) else STARTUP_FAILURE
        raise
    return 0 if server.started else STARTUP_FAILURE


async def _keys(config: Config, args: argparse.Namespace) -> int:
    database = config.database_config()
    engine = create_engine(database)
    try:
        await migrate(engine)
        store = KeyStore(engine)
        if args.action == "create":
            try:
                key = await store.create(args.name)
            except ValueError as exc:
                print(f"sluice: {exc}", file=sys.stderr)
                return 1
            print(f"Created key {args.name!r}. Store it now: it cannot be shown again.")
            print(key)
        elif args.action == "list":
            rows = await store.list()
            if not rows:
                print("no keys")
            for row in rows:
                created = datetime.fromtimestamp(int(row["created_at"]), UTC).isoformat(timespec="seconds")
                state = "revoked" if row["revoked_at"] else "active"
                print(f"{row['name']}\t{row['prefix']}…\t{created}\t{state}")
        elif args.action == "revoke":
            if not await store.revoke(args.name):
                print(f"sluice: no active key named {args.name!r}", file=sys.stderr)
                return 1
            print(f"Revoked key {args.name!r}.")
        return 0
    except Exception as exc:  # the database is down, refuses us, or does not answer in time
        print(f"sluice: cannot use the database {display_url(database.url)}: {describe_error(exc)}",
              file=sys.stderr)
        return 1
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
