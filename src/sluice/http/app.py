"""The ASGI application: the route table, authentication, and the lifespan of shared resources."""

from __future__ import annotations

import gc
import logging
import os
from typing import TYPE_CHECKING, Any

from sluice.config import Config, load_config
from sluice.errors import GatewayError, NotFound
from sluice.http.asgi import ClientGone, Receive, Scope, Send, send_error, send_json
from sluice.http.auth import Authenticator
from sluice.http.responses import ResponsesSurface
from sluice.http.routes import Call, RouteTable
from sluice.pipeline import Pipeline
from sluice.routing.catalog import Catalog, build_catalog
from sluice.state.db import create_engine, describe_error, migrate
from sluice.state.keys import ANONYMOUS, KeyStore, Principal

if TYPE_CHECKING:
    from sluice.routing.shared import SharedRouting

log = logging.getLogger("sluice")


class SluiceApp:
    """The ASGI application: the route table, authentication, and the lifespan of shared resources."""

    def __init__(self, config: Config, catalog: Catalog | None = None) -> None:
        self.config = config
        self.catalog = catalog or build_catalog(config)
        self.pipeline: Pipeline | None = None
        self.keys: KeyStore | None = None
        self.auth: Authenticator | None = None
        self.routes = RouteTable()
        self._engine: Any = None
        self.shared: SharedRouting | None = None  # routing state shared through Redis, when configured

    # --- lifespan ----------------------------------------------------------------------------

    async def startup(self) -> None:
        self._engine = create_engine(self.config.database)
        try:
            # `sluice serve` migrated before starting workers; this covers an app started otherwise.
            await migrate(self._engine)
        except Exception as exc:
            # Not fatal: /ready says 503 and requests that need the database get 503 until it answers.
            log.warning("cannot prepare the database: %s", describe_error(exc))
        self.keys = KeyStore(self._engine)
        self.auth = Authenticator(self.config, self._engine, self.keys)
        await self.auth.start()
        self.pipeline = pipeline = Pipeline(self.config, self.catalog)
        if self.config.redis:
            # Imported here: a gateway without Redis never loads the client.
            from sluice.routing.shared import SharedRouting

            # Never fails for Redis' sake: down, it logs a warning and routing stays local.
            self.shared = SharedRouting(pipeline.live, self.config.redis)
            await self.shared.start()
        responses = ResponsesSurface(pipeline, self.config.server)
        routes = self.routes
        routes.add("POST", "/v1/responses", responses.create)
        routes.add("GET", "/v1/models", self._list_models)
        routes.add("GET", "/v1/models/", self._get_model)
        routes.add("GET", "/health", self._health, authenticated=False)
        routes.add("GET", "/healthz", self._health, authenticated=False)
        routes.add("GET", "/ready", self._ready, authenticated=False)
        routes.add("GET", "/readyz", self._ready, authenticated=False)
        # Everything allocated so far lives as long as the process: move it out of the
        # collector's sight, so full collections stop re-scanning ~70k import-time objects
        # (each took ~24 ms and set the p99 under load).
        gc.collect()
        gc.freeze()

    async def shutdown(self) -> None:
        if self.shared is not None:
            await self.shared.stop()
        if self.pipeline is not None:
            await self.pipeline.close()
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
        endpoint, tail = self.routes.match(scope["method"], scope["path"])
        caller = await self._authenticate(scope) if endpoint.authenticated else ANONYMOUS
        await endpoint.handler(Call(scope, receive, send, caller, tail))

    # --- small endpoints -----------------------------------------------------------------------

    async def _list_models(self, call: Call) -> None:
        await send_json(call.send, 200, {"object": "list", "data": self.catalog.cards()})

    async def _get_model(self, call: Call) -> None:
        name = call.tail
        entry = self.catalog.lookup(name)
        prefix, slash, rest = name.partition("/")
        if entry is None and slash and self.catalog.provider_name(prefix):
            entry = self.catalog.lookup(rest)  # `provider/model` names the same card
        if entry is None:
            raise NotFound(f"The model `{name}` does not exist or you do not have access to it.",
                           param="model", code="model_not_found")
        await send_json(call.send, 200, entry.card(self.catalog.created))

    async def _health(self, call: Call) -> None:
        # Liveness: the process serves. Redis is optional (routing falls back to local state), so
        # it is reported, never a reason for a failing probe.
        body = {"status": "ok"}
        if self.shared is not None:
            body["redis"] = self.shared.status()
        await send_json(call.send, 200, body)

    async def _ready(self, call: Call) -> None:
        assert self.auth is not None  # readiness: the database answers
        ready = await self.auth.ready()
        await send_json(call.send, 200 if ready else 503, {"status": "ready" if ready else "unavailable"})

    async def _authenticate(self, scope: Scope) -> Principal:
        assert self.auth is not None
        return await self.auth.authenticate(scope)


def create_app(config: Config | None = None) -> SluiceApp:
    """The app for a server process; the config comes from `SLUICE_CONFIG` when not given."""
    if config is None:
        config = load_config(os.environ.get("SLUICE_CONFIG"))
    return SluiceApp(config)


