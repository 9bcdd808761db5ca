"""A real HTTP/1.1 server that replays queued :class:`Exchange` responses in FIFO order.

Streams go out with chunked transfer encoding, one SSE event / eventstream frame
per write, so clients (aiohttp, httpx, http.client) observe a genuine stream and
keep-alive connections stay reusable afterwards.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

from .recordings import Exchange

# Poll interval while sleeping, so a client hang-up is noticed promptly.
_POLL = 0.005

# Headers the server computes itself for every response.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "date", "server"})


class ReceivedRequest(NamedTuple):
    """A request as the replay server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any | None


@dataclass
class _Queued:
    exchange: Exchange
    fail_after_events: int | None
    delay_before_headers: float
    event_delay: float | None


class _ClientGone(Exception):
    """The client closed its side before the response finished."""


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client (the gateway) dropping a keep-alive connection is normal, not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class ReplayServer:
    """Serve queued exchanges on 127.0.0.1 from a background thread."""

    def __init__(self, *, event_delay: float = 0.0, host: str = "127.0.0.1") -> None:
        self.event_delay = event_delay
        self.requests: list[ReceivedRequest] = []
        # (request, exchange served or None when the queue was empty), in arrival order.
        self.served: list[tuple[ReceivedRequest, Exchange | None]] = []
        self.disconnects = 0
        self.aborted = 0  # responses cut on purpose by fail_after_events
        self._queue: deque[_Queued] = deque()
        self._cond = threading.Condition()
        self._host = host
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> ReplayServer:
        """Bind an ephemeral port and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"replay": self})
        httpd = _QuietServer((self._host, 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        # A short poll interval keeps stop() (hence every `with` block) fast.
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="replay-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        # Idle keep-alive handlers block on read; shutting their sockets down
        # releases them instead of leaving threads parked until the client leaves.
        with self._cond:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("ReplayServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self._host}:{self.port}"

    # -- queue ---------------------------------------------------------------

    def enqueue(
        self,
        exchanges: Exchange | Iterable[Exchange],
        *,
        fail_after_events: int | None = None,
        delay_before_headers: float = 0.0,
        event_delay: float | None = None,
    ) -> None:
        """Queue responses, served FIFO whatever path the client asks for.

        ``fail_after_events=N`` closes the connection after N frames (SSE events,
        ``[DONE]`` included, or eventstream frames; 0 = right after the headers).
        A single-frame body is cut in half for N=0 and sent whole otherwise.
        ``delay_before_headers`` waits before the
        status line, noticing a client hang-up meanwhile. ``event_delay`` overrides
        the server-wide pause between frames. Options apply to every exchange given.
        """
        items = [exchanges] if isinstance(exchanges, Exchange) else list(exchanges)
        with self._cond:
            for exchange in items:
                self._queue.append(_Queued(exchange, fail_after_events, delay_before_headers, event_delay))

    def pending(self) -> int:
        """Number of queued, not yet served responses."""
        with self._cond:
            return len(self._queue)

    def reset(self) -> None:
        """Forget queued responses, received requests and counters."""
        with self._cond:
            self._queue.clear()
            self.requests.clear()
            self.served.clear()
            self.disconnects = 0
            self.aborted = 0

    def wait_for(self, predicate: Callable[[ReplayServer], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate(self)`` holds (checked on every server event)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def wait_for_disconnects(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` client disconnects were seen."""
        return self.wait_for(lambda s: s.disconnects >= count, timeout)

    # -- called from handler threads -----------------------------------------

    def _take(self, request: ReceivedRequest) -> _Queued | None:
        with self._cond:
            self.requests.append(request)
            item = self._queue.popleft() if self._queue else None
            self.served.append((request, item.exchange if item else None))
            self._cond.notify_all()
            return item

    def _count(self, attr: str) -> None:
        with self._cond:
            setattr(self, attr, getattr(self, attr) + 1)
            self._cond.notify_all()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._cond:
            (self._connections.add if add else self._connections.discard)(conn)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    replay: ReplayServer  # set on the per-server subclass
    timeout = 30  # idle keep-alive connections give up eventually

    def setup(self) -> None:
        super().setup()
        # Small frames must leave immediately, not wait for Nagle/delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.replay._track(self.connection, True)

    def finish(self) -> None:
        self.replay._track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean

    def do_GET(self) -> None:
        self._serve()

    # No HEAD: replayed responses always carry a body.
    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    # -- request -------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        body = self._read_body()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = ReceivedRequest(self.command, self.path, headers, body, parsed)
        item = self.replay._take(request)
        try:
            if item is None:
                self._send_queue_empty()
            else:
                self._send_exchange(item)
        except (_ClientGone, BrokenPipeError, ConnectionResetError):
            self.replay._count("disconnects")
            self.close_connection = True

    # -- response ------------------------------------------------------------

    def _client_gone(self) -> bool:
        # Readable + zero-byte peek means the peer sent FIN (or RST); a pipelined
        # next request would peek as data and is not a disconnect.
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if self._client_gone():
                raise _ClientGone
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(_POLL, remaining))

    def _send_queue_empty(self) -> None:
        payload = json.dumps(
            {
                "error": {
                    "message": f"replay queue empty: no response queued for {self.command} {self.path}",
                    "type": "replay_queue_empty",
                }
            }
        ).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_exchange(self, item: _Queued) -> None:
        exchange = item.exchange
        if item.delay_before_headers > 0:
            self._sleep(item.delay_before_headers)
        frames = exchange.frames()
        chunked = exchange.stream or len(frames) > 1
        self.send_response(exchange.status)
        for name, value in exchange.headers.items():
            if name not in _FRAMING_HEADERS:
                self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(exchange.body)))
        self.end_headers()

        delay = self.replay.event_delay if item.event_delay is None else item.event_delay
        limit = item.fail_after_events
        if not chunked:
            if limit == 0:
                # Promise the full Content-Length, deliver half: a truncated body.
                self.wfile.write(exchange.body[: len(exchange.body) // 2])
                self._abort()
                return
            self.wfile.write(exchange.body)
            return
        for index, frame in enumerate(frames):
            if limit is not None and index >= limit:
                self._abort()
                return
            if index and delay > 0:
                self._sleep(delay)
            elif self._client_gone():
                raise _ClientGone
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        self.wfile.write(b"0\r\n\r\n")

    def _abort(self) -> None:
        # FIN without the terminating zero-size chunk: the client sees the body end
        # early ("payload not completed"), like an upstream dying mid-stream.
        self.replay._count("aborted")
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
