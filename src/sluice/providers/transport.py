"""The HTTP client adapters use to call upstreams.

aiohttp, chosen by measurement against pyreqwest (Rust's reqwest driven from asyncio): pyreqwest
costs less CPU for a whole JSON answer (~70 µs against ~120 µs per request on the benchmark's
loopback upstream), but a stream read as it arrives crosses threads on every chunk and costs more
(~265 µs against ~210 µs per 28-event stream) — and streaming is the path that must stay cheap.
Everything adapters need is behind this module, so the client can be swapped without touching
translation code.

An upstream is untrusted (docs/security.md): redirects are never followed (they would carry the
provider's credentials, and on 307/308 the prompt, to whatever origin the upstream names) and no
body is read without a size limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import aiohttp
from yarl import URL

from sluice.config import DEFAULT_MAX_RESPONSE_BYTES, ProviderConfig

_DRAIN_SECONDS = 0.5
_DRAIN_BYTES = 64 * 1024
# An error answer is only read for its message: this much is plenty, the rest is never read.
ERROR_BODY_BYTES = 64 * 1024


class ResponseTooLarge(Exception):
    """An upstream body (a whole answer, or one stream event still waiting for its end) went over its cap."""

    def __init__(self, what: str, limit: int, setting: str) -> None:
        super().__init__(f"{what} is larger than {limit} bytes (the provider's `{setting}`)")
        self.limit = limit
        self.setting = setting


# What a failed connection, a timeout, a broken body read or an oversized body raises.
NetworkError = (aiohttp.ClientError, asyncio.TimeoutError, ResponseTooLarge)


def describe_network_error(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


class UpstreamResponse:
    """An upstream answer whose body is read as it arrives; close it when done."""

    __slots__ = ("_abandoned", "_max_bytes", "_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self._response = response
        self._max_bytes = max_bytes
        self._abandoned = False
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers  # case-insensitive

    def chunks(self) -> AsyncIterator[bytes]:
        # aiohttp's flow control bounds each chunk; what a reader accumulates is capped by the reader.
        return self._response.content.iter_any()

    async def read(self) -> bytes:
        """The whole body; over the provider's `max_response_bytes` raises `ResponseTooLarge`.

        A declared Content-Length over the cap is refused before reading anything; otherwise the
        body is counted as it arrives (a compressed or chunked body says nothing reliable about its
        decoded size). The oversized rest is never read: `aclose` closes the connection.
        """
        limit = self._max_bytes
        response = self._response
        length = response.content_length
        if length is not None and length > limit:
            self.abandon()
            raise ResponseTooLarge("the upstream's answer", limit, "max_response_bytes")
        content = response.content
        parts: list[bytes] = []
        size = 0
        while chunk := await content.readany():
            size += len(chunk)
            if size > limit:
                self.abandon()
                raise ResponseTooLarge("the upstream's answer", limit, "max_response_bytes")
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read_prefix(self, limit: int = ERROR_BODY_BYTES) -> bytes:
        """At most `limit` bytes of the body (an error answer, read for its message); the rest is discarded."""
        content = self._response.content
        parts: list[bytes] = []
        size = 0
        while size < limit and (chunk := await content.readany()):
            parts.append(chunk)
            size += len(chunk)
        if not content.is_eof():
            self.abandon()
        return b"".join(parts)[:limit]

    def abandon(self) -> None:
        """Close the connection on `aclose` instead of reading the body's tail to reuse it."""
        self._abandoned = True

    async def aclose(self) -> None:
        """Give the connection back to the pool, or close it.

        A stream is usually left right after its protocol-level end (`[DONE]`, `message_stop`,
        `response.completed`), just before the body's own end: reading that short tail lets the
        connection be reused instead of paying a new TCP (and TLS) handshake per stream. When the
        request is being cancelled (the client left), the body is abandoned at once, which closes
        the connection so the upstream stops generating.
        """
        response = self._response
        if self._abandoned:
            response.close()
            return
        content = response.content
        if not content.is_eof():
            task = asyncio.current_task()
            if task is not None and not task.cancelling():
                try:
                    async with asyncio.timeout(_DRAIN_SECONDS):
                        drained = 0
                        while drained < _DRAIN_BYTES and (chunk := await content.readany()):
                            drained += len(chunk)
                except (TimeoutError, aiohttp.ClientError):
                    pass
        # release() keeps the connection only when the body was read to its end.
        response.release()


class UpstreamClient:
    """A connection pool for one provider, with its timeouts."""

    def __init__(self, config: ProviderConfig) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, connect=config.connect_timeout, sock_read=config.timeout)
        self._max_bytes = config.max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        session = self._session
        if session is None:
            # Created on first use: a session belongs to the running event loop.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
            session = self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        # encoded=True: the path goes out byte for byte as given (Bedrock signs `%3A` in model ids).
        # allow_redirects=False: a 3xx is handed back as it is; following it would send the
        # credentials and the prompt to whatever origin the upstream names (the caller fails the route).
        response = await session.post(URL(url, encoded=True), data=body, headers=headers,
                                      timeout=self._timeout, allow_redirects=False)
        return UpstreamResponse(response, self._max_bytes)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
