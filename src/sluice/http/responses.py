"""The Responses surface: `POST /v1/responses` in, the pipeline, a Response or its SSE stream out."""

from __future__ import annotations

import re
from typing import Any

from sluice.canonical.request import parse_request
from sluice.config import ServerConfig
from sluice.errors import GatewayError
from sluice.http.asgi import (
    Send,
    UnsupportedMediaType,
    cancel_on_disconnect,
    header,
    read_body,
    send_error,
    send_json,
    send_sse,
)
from sluice.http.routes import Call
from sluice.http.sse import ResponsesEventEncoder
from sluice.pipeline import Pipeline
from sluice.pipeline.context import RequestContext


class ResponsesSurface:
    def __init__(self, pipeline: Pipeline, server: ServerConfig) -> None:
        self.pipeline = pipeline
        self.server = server

    async def create(self, call: Call) -> None:
        content_type = header(call.scope, b"content-type")
        if content_type is not None and not content_type.split(b";")[0].strip().lower().endswith(b"json"):
            raise UnsupportedMediaType(
                f"Unsupported content type: '{content_type.decode('latin-1')}'. This endpoint only accepts "
                "'application/json' requests.",
                code="unsupported_content_type")
        body = await read_body(call.scope, call.receive, self.server.max_body_bytes)
        request = parse_request(body, self.server)
        pipeline = self.pipeline
        ctx = pipeline.context(call.caller, request)
        send = call.send
        if request.stream:
            async def run_stream() -> None:
                stream = await pipeline.open_stream(ctx)
                try:
                    await send_sse(send, stream, ResponsesEventEncoder().encode, _answer_headers(ctx))
                finally:
                    # After the client's response has ended: reading the upstream's tail (to reuse
                    # its connection) never delays the client.
                    await stream.aclose()

            await cancel_on_disconnect(call.receive, _reporting(send, run_stream(), ctx))
        else:
            async def run() -> None:
                response = await pipeline.create(ctx)
                await send_json(send, 200, response, _answer_headers(ctx))

            await cancel_on_disconnect(call.receive, _reporting(send, run(), ctx))


DROPPED_TOOLS_HEADER = b"x-sluice-dropped-tools"
_HEADER_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")


ROUTE_HEADER = b"x-sluice-route"


def _answer_headers(ctx: RequestContext) -> list[tuple[bytes, bytes]]:
    """Headers of an answer: the route that served it, and the hosted tools its provider left out."""
    headers = _route_header(ctx)
    # Tool types come from the client: only token characters go into a header, and not too many.
    names = [name for name in (_HEADER_UNSAFE.sub("", kind)[:64] for kind in ctx.dropped_tools[:16]) if name]
    if names:
        headers.append((DROPPED_TOOLS_HEADER, ", ".join(names).encode()))
    return headers


def _route_header(ctx: RequestContext) -> list[tuple[bytes, bytes]]:
    """`x-sluice-route`: the serving route, or on an error the last one tried (none: no header)."""
    route = ctx.route or (ctx.attempts[-1].route if ctx.attempts else None)
    # Model ids come from the config or the client: printable ASCII only, nothing to split a header.
    return [(ROUTE_HEADER, _NOT_PRINTABLE.sub("", route.label)[:256].encode())] if route is not None else []


async def _reporting(send: Send, work: Any, ctx: RequestContext) -> None:
    # Errors must be answered inside the cancellable task: the response belongs to it.
    try:
        await work
    except GatewayError as exc:
        await send_error(send, exc, _route_header(ctx))
