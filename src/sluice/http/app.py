"""The ASGI application: routes, authentication, and the lifespan of shared resources."""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from sluice.canonical.request import parse_request
from sluice.config import Config, load_config
from sluice.errors import GatewayError, NotFound, Unauthorized
from sluice.gateway import Gateway
from sluice.http.asgi import (
    ClientGone,
    Receive,
    Scope,
    Send,
    cancel_on_disconnect,
    header,
    read_body,
    send_error,
    send_json,
    send_sse,
)
from sluice.routing.catalog import Catalog, build_catalog
from sluice.state.db import create_engine, init_schema
from sluice.state.keys import ANONYMOUS, MASTER, KeyStore, Principal, is_master

log = logging.getLogger("sluice")


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"


class SluiceApp:
    """`POST /v1/responses`, `GET /v1/models[/{id}]`, `GET /health`."""

    def __init__(self, config: Config, catalog: Catalog | None = None) -> None:
        self.config = config
        self.catalog = catalog or build_catalog(config)
        self.gateway: Gateway | None = None
        self.keys: KeyStore | None = None
        self.require_auth = bool(config.master_key)
        self._engine: Any = None

    # --- lifespan ----------------------------------------------------------------------------

    async def startup(self) -> None:
        self._engine = create_engine(self.config.database)
        await init_schema(self._engine)
        self.keys = KeyStore(self._engine)
        if not self.require_auth and await self.keys.count_active() > 0:
            self.require_auth = True
        if not self.require_auth:
            log.warning("no master_key and no API keys: the gateway accepts unauthenticated requests")
        self.gateway = Gateway(self.config, self.catalog)
        # Everything allocated so far lives as long as the process: move it out of the
        # collector's sight, so full collections stop re-scanning ~70k import-time objects
        # (each took ~24 ms and set the p99 under load).
        gc.collect()
        gc.freeze()

    async def shutdown(self) -> None:
        if self.gateway is not None:
            await self.gateway.close()
        if self._engine is not None:
            await self._engine.dispose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- requests ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await self._dispatch(scope, receive, send)
            except GatewayError as exc:
                await send_error(send, exc)
            except ClientGone:
                pass
            except Exception:
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                await send_error(send, GatewayError("The server had an error while processing your request.",
                                                    code="internal_error"))
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"].rstrip("/") or "/"
        method: str = scope["method"]
        if path == "/v1/responses":
            _allow(method, "POST")
            await self._authenticate(scope)
            await self._responses(scope, receive, send)
        elif path == "/v1/models":
            _allow(method, "GET")
            await self._authenticate(scope)
            await send_json(send, 200, {"object": "list", "data": self.catalog.cards()})
        elif path.startswith("/v1/models/"):
            _allow(method, "GET")
            await self._authenticate(scope)
            name = path[len("/v1/models/") :]
            entry = self.catalog.lookup(name)
            prefix, slash, rest = name.partition("/")
            if entry is None and slash and self.catalog.provider_name(prefix):
                entry = self.catalog.lookup(rest)  # `provider/model` names the same card
            if entry is None:
                raise NotFound(f"The model `{name}` does not exist or you do not have access to it.",
                               param="model", code="model_not_found")
            await send_json(send, 200, entry.card(self.catalog.created))
        elif path in ("/health", "/healthz"):
            await send_json(send, 200, {"status": "ok"})
        else:
            raise NotFound(f"Unknown request URL: {method} {path}.", code="unknown_url")

    async def _authenticate(self, scope: Scope) -> Principal:
        value = header(scope, b"authorization")
        if value is None:
            if not self.require_auth:
                return ANONYMOUS
            raise Unauthorized("You didn't provide an API key. Pass it as 'Authorization: Bearer <key>'.",
                               code="missing_api_key")
        scheme, _, key = value.decode("latin-1").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("Malformed Authorization header: expected 'Bearer <key>'.")
        if is_master(key, self.config.master_key):
            return MASTER
        assert self.keys is not None
        principal = await self.keys.authenticate(key)
        if principal is not None:
            return principal
        if not self.require_auth:
            return ANONYMOUS
        raise Unauthorized("Incorrect API key provided.")

    async def _responses(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = header(scope, b"content-type")
        if content_type is not None and not content_type.split(b";")[0].strip().lower().endswith(b"json"):
            raise UnsupportedMediaType(
                f"Unsupported content type: '{content_type.decode('latin-1')}'. This endpoint only accepts "
                "'application/json' requests.",
                code="unsupported_content_type")
        body = await read_body(scope, receive, self.config.server.max_body_bytes)
        parsed = parse_request(body, self.config.server)
        gateway = self.gateway
        assert gateway is not None
        if parsed.stream:
            async def run_stream() -> None:
                stream = await gateway.open_stream(parsed)
                try:
                    await send_sse(send, stream)
                finally:
                    # After the client's response has ended: reading the upstream's tail (to reuse
                    # its connection) never delays the client.
                    await stream.close()

            await cancel_on_disconnect(receive, _reporting(send, run_stream()))
        else:
            async def run() -> None:
                await send_json(send, 200, await gateway.create(parsed))

            await cancel_on_disconnect(receive, _reporting(send, run()))


async def _reporting(send: Send, work: Any) -> None:
    # Errors must be answered inside the cancellable task: the response belongs to it.
    try:
        await work
    except GatewayError as exc:
        await send_error(send, exc)


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"Method {method} is not allowed here; use {allowed}.", code="method_not_allowed")


def create_app(config: Config | None = None) -> SluiceApp:
    """The app for a server process; the config comes from `SLUICE_CONFIG` when not given."""
    if config is None:
        config = load_config(os.environ.get("SLUICE_CONFIG"))
    return SluiceApp(config)


