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

Every call is bounded by its route's timeouts (`config.Timeouts`, docs/routing.md "Timeouts") and
by the request's deadline, both enforced here so that adapters need not know about them: the
attempt loop puts them in `ATTEMPT_LIMITS` before each attempt, `UpstreamClient.post` reads them,
and the `UpstreamResponse` keeps them, so a stream still read after the loop returned stays
bounded. A timeout raises `UpstreamTimeout`, which names the one that fired.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from typing import NamedTuple

import aiohttp
from yarl import URL

from sluice.config import DEFAULT_MAX_RESPONSE_BYTES, ProviderConfig, Timeouts

_DRAIN_SECONDS = 0.5
_DRAIN_BYTES = 64 * 1024
# An error answer is only read for its message: this much is plenty, the rest is never read.
ERROR_BODY_BYTES = 64 * 1024


class AttemptLimits(NamedTuple):
    """What bounds the upstream call of the running attempt."""

    timeouts: Timeouts | None  # the route's (resolved); None: the provider's own
    deadline: float  # the request's deadline, `time.monotonic()` seconds
    deadline_seconds: float  # `routing.deadline`, named in the error when the deadline cuts a call


# Set by the attempt loop (pipeline/attempts.py) before each attempt and read when the request
# goes out, so that no adapter has to pass routes or deadlines through.
ATTEMPT_LIMITS: ContextVar[AttemptLimits | None] = ContextVar("attempt_limits", default=None)


class ResponseTooLarge(Exception):
    """An upstream body (a whole answer, or one stream event still waiting for its end) went over its cap."""

    def __init__(self, what: str, limit: int, setting: str) -> None:
        super().__init__(f"{what} is larger than {limit} bytes (the provider's `{setting}`)")
        self.limit = limit
        self.setting = setting


class UpstreamTimeout(TimeoutError):
    """One of an upstream call's timeouts fired; `setting` is its config key.

    The message names the timeout and its value, nothing of the request (no URL: it may carry a key).
    """

    def __init__(self, setting: str, seconds: float) -> None:
        super().__init__(_TIMEOUT_TEXT[setting].format(float(seconds)))
        self.setting = setting
        self.seconds = seconds


_TIMEOUT_TEXT = {
    "timeouts.connect": "no connection within {} s (timeouts.connect)",
    "timeouts.first_byte": "no first byte within {} s (timeouts.first_byte)",
    "timeouts.idle": "no data for {} s (timeouts.idle)",
    "timeouts.total": "the answer did not end within {} s (timeouts.total)",
    "routing.deadline": "the request reached its deadline, {} s after it arrived (routing.deadline)",
}

# What a failed connection, a timeout, a broken body read or an oversized body raises.
NetworkError = (aiohttp.ClientError, TimeoutError, ResponseTooLarge)


def describe_network_error(exc: BaseException) -> str:
    if isinstance(exc, UpstreamTimeout):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


# Where a call is: sending the request and waiting for the headers, waiting for the body's first
# bytes, reading the body.
_SENDING, _WAITING, _READING = 0, 1, 2
# A call this close to its time (uvloop's timers round to milliseconds) counts as due.
_SLACK = 0.002
_NEVER = float("inf")


class _Watchdog:
    """One timer for all of a client's calls in flight, set for the soonest moment one must be judged.

    A timer per call (uvloop: a libuv handle created and closed) measured ~3 µs a request; here a
    call costs a set insertion and removal. The timer moves only for a call due sooner than every
    other one, so under steady load it wakes about once per `first_byte` period, not per request.
    """

    __slots__ = ("_at", "_calls", "_timer", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: set[UpstreamResponse] = set()
        self._at = _NEVER
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, call: UpstreamResponse, at: float) -> None:
        self._calls.add(call)
        if at < self._at:
            if self._timer is not None:
                self._timer.cancel()
            self._at = at
            self._timer = self.loop.call_at(at, self._wake)

    def forget(self, call: UpstreamResponse) -> None:
        self._calls.discard(call)

    def _wake(self) -> None:
        self._timer = None
        now = self.loop.time()
        soonest = _NEVER
        for call in list(self._calls):
            at = call._due(now)
            if at is None:
                self._calls.discard(call)
            elif at < soonest:
                soonest = at
        self._at = soonest
        if soonest != _NEVER:
            self._timer = self.loop.call_at(soonest, self._wake)


class UpstreamResponse:
    """An upstream answer whose body is read as it arrives (iterate it), or whole (`read`); close it when done.

    Its timeouts, as points in time from the call's start: `first_byte` (or the end, if sooner)
    until the first body bytes, judged by the client's watchdog, which cancels the request while
    the headers are awaited or fails the body's reader; then aiohttp's own read timer, restarted
    by every arriving packet, for `idle`; and the end (`total`, or the request's deadline), judged
    by the watchdog again. Per chunk this costs one comparison.
    """

    __slots__ = ("_abandoned", "_content", "_end", "_end_at", "_fired", "_first_at", "_first_byte", "_idle",
                 "_max_bytes", "_phase", "_readany", "_response", "_task", "_watchdog", "headers", "status")

    def __init__(self, watchdog: _Watchdog, timeouts: Timeouts, limits: AttemptLimits | None,
                 max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        now = watchdog.loop.time()
        self._watchdog = watchdog
        self._max_bytes = max_bytes
        self._abandoned = False
        self._phase = _SENDING
        self._fired: UpstreamTimeout | None = None
        self._task: asyncio.Task[object] | None = None
        self._idle = timeouts.idle
        self._first_byte = timeouts.first_byte or _NEVER
        self._first_at = now + self._first_byte
        # The end: `total` or the request's deadline, whichever comes first; (setting, seconds)
        # name it in the error.
        self._end_at: float | None = None
        self._end = ("", 0.0)
        if timeouts.total is not None:
            self._end_at, self._end = now + timeouts.total, ("timeouts.total", timeouts.total)
        if limits is not None:
            # The deadline is in time.monotonic(); the loop's clock may be offset from it (uvloop).
            at = now + (limits.deadline - time.monotonic())
            if self._end_at is None or at < self._end_at:
                self._end_at, self._end = at, ("routing.deadline", limits.deadline_seconds)
        self._response: aiohttp.ClientResponse
        self._content: aiohttp.StreamReader
        self.status = 0
        self.headers: Mapping[str, str] = {}

    async def _send(self, session: aiohttp.ClientSession, url: URL, body: bytes, headers: Mapping[str, str],
                    timeout: aiohttp.ClientTimeout) -> None:
        watchdog = self._watchdog
        end_at = self._end_at
        if end_at is not None and end_at <= watchdog.loop.time():
            raise UpstreamTimeout(*self._end)
        task = self._task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        at = self._first_at if end_at is None or self._first_at < end_at else end_at
        if at != _NEVER:  # unbounded only for unresolved Timeouts (a caller outside the catalog)
            watchdog.watch(self, at)
        try:
            # allow_redirects=False: a 3xx is handed back as it is; following it would send the
            # credentials and the prompt to whatever origin the upstream names (the caller fails the route).
            response = await session.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
        except BaseException as exc:
            watchdog.forget(self)
            if self._fired is not None:  # the watchdog cancelled the task
                if task.uncancel() <= cancelling:
                    raise self._fired from None
                raise  # cancelled from outside too (the client left): that cancellation goes on
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise UpstreamTimeout("timeouts.connect", timeout.connect or 0.0) from None
            raise
        self._task = None
        self._phase = _WAITING
        self._response = response
        self._content = response.content
        self._readany = response.content.readany
        self.status = response.status
        self.headers = response.headers  # case-insensitive

    def _due(self, now: float) -> float | None:
        """The watchdog's question: fail the call if a timeout has passed; else when to ask again (None: never)."""
        phase = self._phase
        end_at = self._end_at
        if phase == _SENDING or (phase == _WAITING and not (self._content.total_bytes or self._content.is_eof())):
            at = self._first_at if end_at is None or self._first_at < end_at else end_at
            if at - now > _SLACK:
                return at
            error = UpstreamTimeout("timeouts.first_byte", self._first_byte) if at == self._first_at \
                else UpstreamTimeout(*self._end)
        else:
            # The first bytes came in time; what is left is the end.
            if end_at is None or self._content.is_eof():
                return None  # no end, or the whole answer arrived in time
            if end_at - now > _SLACK:
                return end_at
            error = UpstreamTimeout(*self._end)
        self._fired = error
        self._abandoned = True  # an answer cut short is not read to its end for reuse
        if phase == _SENDING:
            assert self._task is not None
            self._task.cancel()
        else:
            self._content.set_exception(error)
        return None

    def _reading(self) -> None:
        """The first body bytes were read: from now on the gaps between packets are bounded by `idle`."""
        self._phase = _READING
        connection = self._response.connection
        if connection is not None and connection.protocol is not None and not self._content.is_eof():
            # aiohttp's read timer (its `sock_read`) is restarted by every packet received; it had
            # none while the answer was awaited, which `first_byte` bounds instead.
            protocol = connection.protocol
            protocol.read_timeout = self._idle
            protocol.start_timeout()

    def _timed_out(self, exc: TimeoutError) -> UpstreamTimeout:
        self._abandoned = True
        if isinstance(exc, UpstreamTimeout):
            return exc
        # aiohttp's own read timer: the only one it runs on the body is `idle`.
        return UpstreamTimeout("timeouts.idle", self._idle or 0.0)

    def __aiter__(self) -> UpstreamResponse:
        return self

    async def __anext__(self) -> bytes:
        # aiohttp's own iterator (`content.iter_any()`) does the same: no extra layer per chunk.
        try:
            chunk = await self._readany()
        except TimeoutError as exc:
            raise self._timed_out(exc) from None
        if not chunk:
            raise StopAsyncIteration
        if self._phase != _READING:
            self._reading()
        return chunk

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives. aiohttp's flow control bounds each chunk; a reader caps what it accumulates."""
        return self

    async def read(self) -> bytes:
        """The whole body; over the provider's `max_response_bytes` raises `ResponseTooLarge`.

        A declared Content-Length over the cap is refused before reading anything; otherwise the
        body is counted as it arrives (a compressed or chunked body says nothing reliable about its
        decoded size). The oversized rest is never read: `aclose` closes the connection.
        """
        limit = self._max_bytes
        length = self._response.content_length
        if length is not None and length > limit:
            self.abandon()
            raise ResponseTooLarge("the upstream's answer", limit, "max_response_bytes")
        readany = self._readany
        parts: list[bytes] = []
        size = 0
        try:
            while chunk := await readany():
                if self._phase != _READING:
                    self._reading()
                size += len(chunk)
                if size > limit:
                    self.abandon()
                    raise ResponseTooLarge("the upstream's answer", limit, "max_response_bytes")
                parts.append(chunk)
        except TimeoutError as exc:
            raise self._timed_out(exc) from None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read_prefix(self, limit: int = ERROR_BODY_BYTES) -> bytes:
        """At most `limit` bytes of the body (an error answer, read for its message); the rest is discarded."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self:
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        if not self._content.is_eof():
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
        request is being cancelled (the client left), or a timeout cut the answer, the body is
        abandoned at once, which closes the connection so the upstream stops generating.
        """
        self._watchdog.forget(self)
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
    """A connection pool for one provider; each call bounded by its attempt's timeouts and deadline."""

    def __init__(self, config: ProviderConfig) -> None:
        # The provider's own, for a call made outside the attempt loop (ATTEMPT_LIMITS unset).
        self._timeouts = config.resolved_timeouts()
        # aiohttp enforces `connect` only; one ClientTimeout per value (routes may override it).
        self._client_timeouts: dict[float | None, aiohttp.ClientTimeout] = {}
        self._max_bytes = config.max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        self._watchdog: _Watchdog | None = None

    def _client_timeout(self, connect: float | None) -> aiohttp.ClientTimeout:
        found = self._client_timeouts.get(connect)
        if found is None:
            found = self._client_timeouts[connect] = aiohttp.ClientTimeout(total=None, connect=connect,
                                                                           sock_read=None)
        return found

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        session = self._session
        if session is None:
            # Created on first use: a session belongs to the running event loop.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
            session = self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
            self._watchdog = _Watchdog(asyncio.get_running_loop())
        assert self._watchdog is not None
        limits = ATTEMPT_LIMITS.get()
        timeouts = self._timeouts if limits is None or limits.timeouts is None else limits.timeouts
        response = UpstreamResponse(self._watchdog, timeouts, limits, self._max_bytes)
        # encoded=True: the path goes out byte for byte as given (Bedrock signs `%3A` in model ids).
        await response._send(session, URL(url, encoded=True), body, headers, self._client_timeout(timeouts.connect))
        return response

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
