"""An upstream with several routes for routing tests: `/<route>/v1/chat/completions`, OpenAI chat.

Each route answers a minimal chat completion, after `delay[route]` seconds, or a 500 while
`failing` holds the route; a request whose body holds `REFUSE` is answered 400 at once (the
request's fault: the gateway does not count it against the route, nor measure it). `hits`
counts the calls each route received.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REFUSE = "refuse-this-request"


class RouteUpstream:
    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.delay: dict[str, float] = {}
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> RouteUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def answer(self, route: str, body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.hits[route] += 1
            failing, delay = route in self.failing, self.delay.get(route, 0.0)
        if REFUSE.encode() in body:
            return 400, {"error": {"message": "refused", "type": "invalid_request_error", "code": None}}
        if delay:
            time.sleep(delay)
        if failing:
            return 500, {"error": {"message": "the route is failing", "type": "server_error", "code": None}}
        return 200, {
            "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": route,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"served by {route}"}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16,
                      "prompt_tokens_details": {"cached_tokens": 8}},
        }


def _handler(upstream: RouteUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            received = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, body = upstream.answer(self.path.strip("/").split("/")[0], received)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
