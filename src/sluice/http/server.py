"""The HTTP server's defences against slow, idle and oversized clients, on top of uvicorn.

uvicorn's httptools protocol has a keep-alive timeout but no deadline for a new connection that
never sends a byte, for headers, or for a body: a client that connects and waits, or drips a
byte a second, held its connection (and a file descriptor) forever, and 1,100 of them took a
1,024-descriptor gateway offline. It also fed headers of any size to the parser, whose cost grows
faster than the size (128 MiB: 19 s, 318 MB). `SluiceHttpProtocol` adds, per connection:

- an idle deadline for a connection that has not started a request (`idle_timeout`);
- a header deadline from a request's first byte (`header_timeout`): 408, then close;
- a body deadline from the end of the headers (`body_timeout`): 408, then close;
- a cap on the request line + headers (`max_header_bytes`): 431, then close;
- a cap on open connections per worker (`max_connections`): 503 at once, before reading;
- `connection: close` on a response sent before the request's body was fully received (an
  early 413 or 401), so the rest of the body is never parsed nor waited for.

Rejections are written straight to the socket in OpenAI's error shape, then the connection is
half-closed and drained for a moment before closing ("lingering close", as nginx and Go do):
closing a socket that still has unread request bytes makes the kernel send a reset, which can
destroy the response before the client reads it.

The per-request cost is a few attribute writes; a timer is armed only when a request's headers or
body do not arrive in the packet that started them.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import resource
import time
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sluice.config import ServerConfig

log = logging.getLogger("sluice.server")

# Connection phases. A request moves IDLE -> HEAD -> BODY -> DONE, and back to IDLE once its
# response is complete; LINGER is the last phase of a connection being closed.
_IDLE, _HEAD, _BODY, _DONE, _LINGER = range(5)

# How long a rejected connection is drained after its response (Go uses 0.5 s, nginx up to 5 s).
LINGER_SECONDS = 1.0
# Descriptors kept for what is not a client connection (listening socket, database, logs, DNS).
_RESERVED_FDS = 64


class ServerLimits(msgspec.Struct, frozen=True):
    """What the protocol enforces, resolved from `ServerConfig` in the parent process."""

    idle_timeout: float
    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    max_connections: int


def resolve_limits(server: ServerConfig) -> ServerLimits:
    return ServerLimits(idle_timeout=server.idle_timeout, header_timeout=server.header_timeout,
                        body_timeout=server.body_timeout, max_header_bytes=server.max_header_bytes,
                        max_connections=server.max_connections or auto_max_connections())


def auto_max_connections() -> int:
    """Connections a worker can hold without running out of descriptors.

    A client connection in flight usually also holds one upstream connection: two descriptors.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(16, (soft - _RESERVED_FDS) // 2)


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one; return (before, after).

    The soft limit is often 1,024 while the hard one is far higher: an unprivileged process may
    raise its own soft limit up to the hard one. Worker processes inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = 1 << 20  # macOS reports "unlimited" but refuses more than this
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft


def uvicorn_options(server: ServerConfig) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` that apply the server limits."""
    limits = resolve_limits(server)
    return {
        # A partial, not a class built on the fly: with several workers uvicorn pickles the config.
        "http": functools.partial(SluiceHttpProtocol, limits=limits),
        "ws": "none",  # the gateway serves no WebSocket; an Upgrade request is plain HTTP
        "timeout_keep_alive": server.keepalive_timeout,
        # uvicorn's own `limit_concurrency` answers a plain-text 503 only once a request has been
        # read, and never to a connection that sends nothing; `max_connections` replaces it.
        "limit_concurrency": None,
    }


class _RateLimitedLog:
    """The first event of a kind is logged at once; more within `interval` s become one summary.

    A flood of slow clients must be visible in the log without the log becoming the flood.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._windows: dict[str, list[Any]] = {}  # reason -> [window start, events since]

    def __call__(self, level: int, reason: str) -> None:
        now = time.monotonic()
        window = self._windows.get(reason)
        if window is not None:
            if now - window[0] < self.interval:
                window[1] += 1
                return
            self._summary(level, reason, window[0])  # its timer did not run (its loop stopped)
        log.log(level, "%s", reason)
        self._windows[reason] = [now, 0]
        asyncio.get_running_loop().call_later(self.interval, self._summary, level, reason, now)

    def _summary(self, level: int, reason: str, started: float) -> None:
        window = self._windows.get(reason)
        if window is None or window[0] != started:
            return
        del self._windows[reason]
        if window[1]:
            log.log(level, "%s: %d more in the last %g s", reason, window[1], self.interval)


_log_closed = _RateLimitedLog()


class _ResponseTransport:
    """The transport as a request's response cycle sees it: `close` may linger instead.

    uvicorn closes the transport itself after a `connection: close` response; going through
    this object lets the protocol drain a body that was still arriving instead.
    """

    __slots__ = ("close", "is_closing", "write")

    def __init__(self, transport: asyncio.Transport, close: Any) -> None:
        self.write = transport.write
        self.is_closing = transport.is_closing
        self.close = close


class SluiceHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines and size caps (see the module docstring)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, limits: ServerLimits) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        self._phase = _IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._timer_phase = _IDLE
        self._head_bytes = 0
        self._keep_alive = True
        self._shutting_down = False
        self._response_transport: _ResponseTransport | None = None

    # --- connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            _log_closed(logging.WARNING, f"refused a connection: over max_connections "
                        f"({self._limits.max_connections} per worker)")
            self._write_error(503, "The server has too many open connections; retry shortly.",
                              "too_many_connections", "server_error", retry_after=True)
            # Closed at once, not lingering: past the cap, every descriptor counts.
            self._phase = _LINGER
            transport.close()
            return
        self._response_transport = _ResponseTransport(transport, self._close_after_response)
        # uvicorn arms its keep-alive timer only after a response; a connection that never sends
        # a byte gets the same treatment with `idle_timeout` (data_received cancels it).
        self.timeout_keep_alive_task = self.loop.call_later(self._limits.idle_timeout,
                                                            self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == _BODY:
            super().data_received(data)
        elif phase == _LINGER:
            return  # the response is sent: drain and discard
        else:
            if phase != _HEAD:  # the first bytes of a request
                self._phase = _HEAD
                self._head_bytes = 0
            self._feed_head(data)
        if self._phase != self._timer_phase:
            self._set_timer()

    def _feed_head(self, data: bytes) -> None:
        room = self._limits.max_header_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # Feed only what the limit allows: the headers may end inside it, the rest being body.
        self._head_bytes += room
        super().data_received(data[:room])
        if self.transport.is_closing() or self._phase == _LINGER:
            return
        if self._phase == _HEAD:
            _log_closed(logging.INFO, f"answered 431: request headers over max_header_bytes "
                        f"({self._limits.max_header_bytes} bytes)")
            self._reject(431, f"The request line and headers are larger than {self._limits.max_header_bytes} "
                         "bytes.", "request_header_fields_too_large")
            return
        super().data_received(data[room:])

    def shutdown(self) -> None:
        self._shutting_down = True
        super().shutdown()

    # --- parser callbacks -------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase = _BODY
        cycle = self.cycle
        if cycle is None or self.scope is not cycle.scope:
            return  # an upgrade request: no cycle (WebSocket is off, so this is not reached)
        # A response started before the body is complete ends the connection: the rest of the
        # body will not be read. on_message_complete restores keep-alive once the body is in.
        self._keep_alive = cycle.keep_alive
        cycle.keep_alive = False
        cycle.transport = self._response_transport  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._phase != _BODY:
            return
        self._phase = _DONE
        cycle = self.cycle
        if not cycle.response_started and not self._shutting_down:
            cycle.keep_alive = self._keep_alive

    def on_response_complete(self) -> None:
        if self._phase == _LINGER:
            self.server_state.total_requests += 1
            return
        super().on_response_complete()
        if self._phase == _DONE and self.cycle.response_complete:
            self._phase = _IDLE

    def _close_after_response(self) -> None:
        if self._phase == _BODY:
            self._linger()  # the client may still be sending the body we did not read
        else:
            self.transport.close()

    # --- deadlines --------------------------------------------------------------------------

    def _set_timer(self) -> None:
        phase = self._phase
        self._cancel_timer()
        self._timer_phase = phase
        if phase == _HEAD:
            self._timer = self.loop.call_later(self._limits.header_timeout, self._header_timeout)
        elif phase == _BODY:
            self._timer = self.loop.call_later(self._limits.body_timeout, self._body_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timeout(self) -> None:
        self._timer = None
        if self._phase != _HEAD or self.transport.is_closing():
            return
        _log_closed(logging.INFO, f"answered 408: request headers not received within header_timeout "
                    f"({self._limits.header_timeout:g} s)")
        self._reject(408, f"The request headers were not received within {self._limits.header_timeout:g} "
                     "seconds.", "request_timeout")

    def _body_timeout(self) -> None:
        self._timer = None
        if self._phase != _BODY or self.transport.is_closing():
            return
        if self.pipeline:  # this request waits behind another, with reading paused: not late
            self._timer = self.loop.call_later(self._limits.body_timeout, self._body_timeout)
            return
        cycle = self.cycle
        if cycle.response_started:  # answered early and still writing: nothing more to say
            self.transport.close()
            return
        _log_closed(logging.INFO, f"answered 408: request body not received within body_timeout "
                    f"({self._limits.body_timeout:g} s)")
        # The application is waiting for the body: tell it the client is gone (it then sends
        # nothing, as its sends are ignored from now on) and answer in its place.
        cycle.disconnected = True
        cycle.message_event.set()
        self._write_error(408, f"The request body was not received within {self._limits.body_timeout:g} "
                          "seconds.", "request_timeout")
        self._linger()

    # --- rejections -------------------------------------------------------------------------

    def _reject(self, status: int, message: str, code: str) -> None:
        """Answer `status` and close, unless an earlier response is still being written."""
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.pipeline:
            # A pipelined request misbehaved while an earlier response is in flight: writing
            # ours would corrupt it. No HTTP client pipelines; just close.
            self.transport.close()
            return
        self._write_error(status, message, code)
        self._linger()

    def _write_error(self, status: int, message: str, code: str, type: str = "invalid_request_error",
                     retry_after: bool = False) -> None:
        body = msgspec.json.encode({"error": {"message": message, "type": type, "param": None, "code": code}})
        head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()]
        head.extend(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers)
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n" % len(body))
        if retry_after:
            head.append(b"retry-after: 1\r\n")
        head.append(b"\r\n")
        self.transport.write(b"".join(head) + body)

    def _linger(self) -> None:
        """Half-close after the response, drain what the client still sends, then close."""
        transport = self.transport
        if transport.is_closing():
            return
        self._phase = self._timer_phase = _LINGER
        self._cancel_timer()
        self._unset_keepalive_if_required()
        if self.flow is not None:
            self.flow.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = self.loop.call_later(LINGER_SECONDS, transport.close)
