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

            await cancel_on_disconnect(call.receive, _reporting(send, run_stream()))
        else:
            async def run() -> None:
                response = await pipeline.create(ctx)
                await send_json(send, 200, response, _answer_headers(ctx))

            await cancel_on_disconnect(call.receive, _reporting(send, run()))


DROPPED_TOOLS_HEADER = b"x-sluice-dropped-tools"
_HEADER_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def _answer_headers(ctx: RequestContext) -> list[tuple[bytes, bytes]]:
    """Headers of an answer: the hosted tools the serving provider left out, so that a client can tell."""
    # Tool types come from the client: only token characters go into a header, and not too many.
    names = [name for name in (_HEADER_UNSAFE.sub("", kind)[:64] for kind in ctx.dropped_tools[:16]) if name]
    return [(DROPPED_TOOLS_HEADER, ", ".join(names).encode())] if names else []


async def _reporting(send: Send, work: Any) -> None:
    # Errors must be answered inside the cancellable task: the response belongs to it.
    try:
        await work
    except GatewayError as exc:
        await send_error(send, exc)
