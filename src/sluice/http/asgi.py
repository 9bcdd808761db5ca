"""Small ASGI helpers: read a bounded body, send JSON, stream SSE and notice disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

import msgspec

from sluice.errors import GatewayError, PayloadTooLarge

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_encode = msgspec.json.encode
_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"


class ClientGone(Exception):
    """The client disconnected before its request was read: nobody to answer."""


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, or `PayloadTooLarge` as soon as it is known to exceed `limit`.

    No deadline here: the server protocol (sluice.http.server) enforces `body_timeout` and
    reports a late body as a disconnect; a response sent before the body is complete closes
    the connection, so the unread rest is never parsed.
    """
    length = header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.",
                              code="request_too_large")
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.",
                                  code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def send_bytes(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_bytes(send, status, _encode(payload), _JSON_HEADERS + headers if headers else _JSON_HEADERS)


async def send_error(send: Send, error: GatewayError, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [*_JSON_HEADERS, *(headers or ())]
    headers.extend((name.encode(), value.encode()) for name, value in error.headers.items())
    await send_bytes(send, error.status, error.encode(), headers)


async def send_sse(send: Send, batches: AsyncIterable[Any], encode: Callable[[Any], bytes],
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Stream `batches`, each encoded to bytes by the surface's `encode`, one write per batch."""
    await send({"type": "http.response.start", "status": 200,
                "headers": _SSE_HEADERS + headers if headers else _SSE_HEADERS})
    async for batch in batches:
        await send({"type": "http.response.body", "body": encode(batch), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def cancel_on_disconnect(receive: Receive, work: Awaitable[None]) -> None:
    """Run `work`, cancelling it (and so the upstream request) if the client goes away.

    The watcher is the only extra task: `work` runs in the request's own task, which the
    watcher cancels when the server reports `http.disconnect` before `work` is finished.
    """
    current = asyncio.current_task()
    assert current is not None
    state = {"finished": False, "cancelled": False}

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not state["finished"]:
            state["cancelled"] = True
            current.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        await work
    except asyncio.CancelledError:
        if not state["cancelled"]:
            raise
    finally:
        state["finished"] = True
        watcher.cancel()
