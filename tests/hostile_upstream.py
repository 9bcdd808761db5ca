"""A hostile upstream for tests: what a compromised or malicious provider endpoint could send.

`HostileUpstream` is a real HTTP/1.1 server on 127.0.0.1 that answers every request with its
current behaviour, records what it received, and counts the body bytes it managed to send before
the client hung up (so a test can prove the gateway stopped reading). Behaviours:

- `redirect(status, location)`: a 3xx to another origin (a second `HostileUpstream` recording what
  reaches it: the proof that no credential or prompt got there);
- `huge(status, size)`: a body of `size` bytes (chunked, or with Content-Length), e.g. a 200 MB
  error body or a JSON answer that never ends;
- `endless_sse()` / `endless_eventstream()`: a stream whose one event never ends;
- `echo_credentials(status)`: an error whose message repeats every request header value;
- `answer(status, body)`: a plain JSON answer (the default: what a second origin would answer).
"""

from __future__ import annotations

import binascii
import contextlib
import json
import socket
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

_PIECE = 256 * 1024
# Upper bound on any endless body, so a gateway that never stops reading still lets a test end.
ENDLESS = 1 << 30


class Received(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Gone(Exception):
    """The client closed the connection while the server was still sending."""


Behaviour = Callable[["_Handler"], None]


class HostileUpstream:
    """Serve the current behaviour to every request, from a background thread."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.sent = 0  # body bytes written for the latest answer
        self.hung_up = False  # the client closed before the latest answer's end
        self.answered = threading.Event()  # the latest answer ended (sent whole, or the client left)
        self.behaviour: Behaviour = _json(200, {"ok": True})
        # Bumped by reset(): an answer still being written for an earlier test counts for nothing.
        self._generation = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> HostileUpstream:
        handler = type("_Bound", (_Handler,), {"upstream": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="hostile-upstream", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # release handlers blocked on a keep-alive read or a full send buffer
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._httpd is not None, "not running"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def reset(self, behaviour: Behaviour | None = None) -> None:
        """Forget what was received and sent; answer with `behaviour` from now on."""
        with self._lock:
            self._generation += 1
            self.requests.clear()
            self.sent = 0
            self.hung_up = False
            self.answered.clear()
            if behaviour is not None:
                self.behaviour = behaviour

    # -- behaviours ------------------------------------------------------------------------------

    def answer(self, status: int, body: Any) -> None:
        self.reset(_json(status, body))

    def redirect(self, status: int, location: str) -> None:
        def behaviour(h: _Handler) -> None:
            payload = json.dumps({"moved": location}).encode()
            h.send_response(status)
            h.send_header("Location", location)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.write(payload)

        self.reset(behaviour)

    def huge(self, status: int, size: int, *, content_type: str = "application/json", prefix: bytes = b"",
             filler: bytes = b" ", content_length: bool = False) -> None:
        """`prefix`, then `filler` repeated up to `size` bytes in all (whitespace: still valid JSON so far)."""
        self.reset(_body(status, content_type, prefix, filler, size, content_length))

    def endless_sse(self, *, prefix: bytes = b"") -> None:
        """`prefix` (e.g. one whole event), then one `data:` line that never ends."""
        self.reset(_body(200, "text/event-stream", prefix + b"data: ", b"x", ENDLESS, False))

    def endless_eventstream(self, declared: int = 20 * 1024 * 1024) -> None:
        """An AWS eventstream frame whose valid prelude announces `declared` bytes, then never ends."""
        head = struct.pack(">II", declared, 0)
        prelude = head + struct.pack(">I", binascii.crc32(head) & 0xFFFFFFFF)
        self.reset(_body(200, "application/vnd.amazon.eventstream", prelude, b"\0", ENDLESS, False))

    def echo_credentials(self, status: int = 401) -> None:
        def behaviour(h: _Handler) -> None:
            echoed = "; ".join(f"{name}={value}" for name, value in h.headers.items())
            message = f"invalid credentials, you sent: {echoed}"
            payload = json.dumps({"type": "error", "message": message,
                                  "error": {"type": "authentication_error", "code": status, "message": message}})
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("x-amzn-errortype", "UnrecognizedClientException:http://internal.amazon.com/coral/")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.write(payload.encode())

        self.reset(behaviour)

    # -- called from handler threads -------------------------------------------------------------

    def _record(self, request: Received) -> tuple[Behaviour, int]:
        with self._lock:
            self.requests.append(request)
            return self.behaviour, self._generation

    def _count(self, generation: int, size: int) -> None:
        with self._lock:
            if generation == self._generation:
                self.sent += size

    def _end(self, generation: int, hung_up: bool) -> None:
        with self._lock:
            if generation != self._generation:
                return
            self.hung_up = hung_up
        self.answered.set()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)


def _json(status: int, body: Any) -> Behaviour:
    def behaviour(h: _Handler) -> None:
        payload = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.write(payload)

    return behaviour


def _body(status: int, content_type: str, prefix: bytes, filler: bytes, size: int, content_length: bool
          ) -> Behaviour:
    piece = filler * (_PIECE // len(filler))

    def behaviour(h: _Handler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        if content_length:
            h.send_header("Content-Length", str(size))
        else:
            h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        frame = (lambda data: data) if content_length else (lambda data: b"%x\r\n%s\r\n" % (len(data), data))
        h.write(frame(prefix), counted=len(prefix))
        left = size - len(prefix)
        while left > 0:
            data = piece[:left]
            h.write(frame(data), counted=len(data))
            left -= len(data)
        if not content_length:
            h.write(b"0\r\n\r\n")

    return behaviour


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: HostileUpstream  # set on the per-server subclass
    generation = 0  # the upstream's generation when this request arrived
    timeout = 30  # a client that neither reads nor leaves: give up eventually

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.upstream._track(self.connection, True)

    def finish(self) -> None:
        self.upstream._track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        behaviour, self.generation = self.upstream._record(Received(self.command, self.path, headers, body))
        try:
            behaviour(self)
        except (_Gone, OSError):
            self.close_connection = True
            self.upstream._end(self.generation, hung_up=True)
            return
        self.upstream._end(self.generation, hung_up=False)

    do_GET = do_PUT = do_POST

    def write(self, data: bytes, *, counted: int = 0) -> None:
        try:
            self.wfile.write(data)
        except OSError as exc:  # reset, broken pipe, timeout: the client is gone
            raise _Gone from exc
        if counted:
            self.upstream._count(self.generation, counted)
