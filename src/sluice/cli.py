"""`sluice serve` runs the gateway; `sluice keys create|list|revoke` manages client keys."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import UTC, datetime

from sluice.config import Config, ConfigError, load_config
from sluice.state.db import create_engine, init_schema
from sluice.state.keys import KeyStore


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

    keys = commands.add_parser("keys", help="manage client API keys")
    keys.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    key_commands = keys.add_subparsers(dest="action", required=True)
    create = key_commands.add_parser("create", help="create a key; prints it on the last line")
    create.add_argument("--name", required=True)
    key_commands.add_parser("list", help="list keys (never their values)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")

    args = parser.parse_args(argv)
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
    return asyncio.run(_keys(config, args))


def _serve(config: Config, args: argparse.Namespace) -> int:
    import uvicorn

    from sluice.http.server import raise_nofile_limit, uvicorn_options
    from sluice.routing.catalog import build_catalog

    server = config.server
    host = args.host or server.host
    port = args.port or server.port
    workers = args.workers or server.workers
    log_level = (args.log_level or server.log_level).lower()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        catalog = build_catalog(config)  # fail fast, before forking workers
    except ConfigError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    before, after = raise_nofile_limit()  # before sizing max_connections from it; workers inherit it
    if after > before:
        logging.getLogger("sluice").info("raised the open-file limit from %d to %d", before, after)
    print(f"sluice: serving {len(catalog.models)} models from {len(catalog.providers)} providers "
          f"on http://{host}:{port} ({workers} worker{'s' if workers != 1 else ''})", file=sys.stderr)
    uvicorn.run(
        "sluice.http.app:create_app",
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
        **uvicorn_options(server),  # the httptools protocol with deadlines and size caps
    )
    return 0


async def _keys(config: Config, args: argparse.Namespace) -> int:
    engine = create_engine(config.database)
    try:
        await init_schema(engine)
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
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
