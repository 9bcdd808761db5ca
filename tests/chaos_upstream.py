"""A chaos upstream: one local server that speaks all five wire protocols and fails on purpose.

`ChaosUpstream` is a real HTTP/1.1 server on 127.0.0.1 (raw asyncio, in a thread of its own, so a
test can cut, reset or stall a connection at any byte). It answers

- OpenAI Responses   `POST /v1/responses`
- Chat Completions   `POST /v1/chat/completions`
- Anthropic Messages `POST /v1/messages`
- Gemini             `POST /v1beta/models/{model}:generateContent` / `:streamGenerateContent?alt=sse`
- Bedrock Converse   `POST /model/{model}/converse` / `/converse-stream`

streamed or not, with a real recorded answer of that protocol from `shared/fixtures` (`RECORDINGS`),
unless the route's upstream model names a failure (`FAILURES`). The model is the route: a request
for model `fail-503` fails with a 503 in its protocol's error shape, `ok` succeeds, and anything
after a dot is a tag that only makes a distinct route (`flaky.t1`: a flaky route of its own).
`override(model, failure)` changes what a model does from now on (a route that heals or breaks).
A failure that only a stream can have (`end-before`, `stall-before`, `error-before-429`,
`end-after`, `garbage-after`) answers a whole (non-streamed) request normally.

Every request is recorded (`hits`: protocol, model, failure, stream, arrival time) before the
failure is played, so a test can assert which candidates were tried, in which order, and when.

A refused connection needs no server: a provider whose `base_url` points at `free_port()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.replay.recordings import (
    decode_eventstream,
    encode_eventstream_frame,
    fixtures_root,
    load,
    parse_sse_block,
)

FIX = fixtures_root()

KINDS = ("openai", "openai-chat", "anthropic", "gemini", "bedrock")

# How long `slow` and the stalls keep silent: far past any gateway timeout a test configures, so
# only the gateway's own timeout can end the wait (the handler notices the gateway leaving).
SILENCE = 10.0

# What each model name does. Failures before content: the client must never see them.
BEFORE_CONTENT = (
    "fail-500",  # HTTP 500, the protocol's error body
    "fail-503",
    "fail-529",  # Anthropic's "overloaded" status, on any protocol
    "fail-429",  # 429 with Retry-After: 1
    "reset",  # the request is read, then the connection is reset (RST)
    "reset-headers",  # half a status line, then RST
    "slow",  # no byte before SILENCE seconds: the gateway's first-byte timeout ends it
    "garbage",  # 200 whose body is not the protocol (HTML for JSON, undecodable SSE / eventstream)
    "cut-before",  # stream: headers + the protocol's start event(s), then FIN; whole: headers, no body
    "end-before",  # stream: headers + start event(s), then a clean end of the body (no terminal event)
    "error-before",  # stream: start event(s) + the protocol's in-stream error; whole: a 200 error body
    "stall-before",  # stream only: headers + start event(s), then SILENCE (no first content)
    "error-before-429",  # stream only: start event(s) + the protocol's in-stream rate-limit error
    "flaky",  # 503 on the first request for this model (since the last reset), then the answer
    "flaky-429",  # 429 with Retry-After: 1 on the first request, then the answer
)
# Failures after content has been sent (for a stream; for a whole answer they are mid-body).
AFTER_CONTENT = (
    "cut-after",  # some text, then FIN (stream: no terminating chunk; whole: half the JSON body)
    "end-after",  # stream only: some text, then a clean end of the body without the protocol's end
    "error-after",  # some text, then the protocol's in-stream error (whole: a 200 failed answer)
    "garbage-after",  # stream only: some text; then, in one write, more text and an event that is not
    # the protocol (so the gateway reads them together), then the end
    "stall-after",  # some text, then SILENCE: the gateway's idle timeout ends it
)
# Answers the request itself is refused with, or the caller is: another route may do better.
REFUSALS = ("fail-400", "fail-401", "fail-403", "fail-404")
FAILURES = (*BEFORE_CONTENT, *AFTER_CONTENT, *REFUSALS)
# Not a failure: the answer, after LATE seconds (a slow but healthy route). Any other name
# (`ok`, `healthy`, ...) is answered at once.
LATE = 0.5

RETRY_AFTER = 1  # seconds, on every 429


# --- what each protocol answers ---------------------------------------------------------------


@dataclass(frozen=True)
class Wire:
    """One protocol's recorded success, streamed and whole, and where its stream may be broken."""

    kind: str
    frames: tuple[bytes, ...]  # the recorded stream, one SSE event / eventstream frame each
    stream_type: str
    body: bytes  # the recorded whole answer
    body_type: str
    start: int  # frames that are the protocol's start event(s), before any content
    content: int  # frames up to and including some text, before the protocol's end

    def texts(self, frames: tuple[bytes, ...] | list[bytes]) -> str:
        """The answer text these stream frames carry."""
        return "".join(_frame_text(self.kind, frame) for frame in frames)

    @property
    def stream_text(self) -> str:
        return self.texts(self.frames)

    @property
    def partial_text(self) -> str:
        """The text sent before an after-content failure."""
        return self.texts(self.frames[: self.content])

    @property
    def body_text(self) -> str:
        return _body_text(self.kind, json.loads(self.body))


def _wire(kind: str, stream: Path, whole: Path, provider: str, start: int, content: int) -> Wire:
    streamed, answer = load(stream, provider=provider)[0], load(whole, provider=provider)[0]
    return Wire(kind, tuple(streamed.frames()), streamed.content_type, answer.body, answer.content_type, start, content)


RECORDINGS: dict[str, Wire] = {
    # Start events: response.created + response.in_progress; content: the message, its part, "pong".
    "openai": _wire("openai", FIX / "openai-responses/simonw-llm/test_responses_basic_streaming.yaml",
                    FIX / "openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml",
                    "openai-responses", start=2, content=5),
    # Start: the role chunk (`content: ""`); content: five text chunks.
    "openai-chat": _wire("openai-chat", FIX / "openai-chat/vercel-ai/openai-text.chunks.txt",
                         FIX / "openai-chat/vercel-ai/openai-text.json", "openai-chat", start=1, content=6),
    # Start: message_start; content: content_block_start, ping, "Hello", "! I".
    "anthropic": _wire("anthropic", FIX / "anthropic/vercel-ai/anthropic-text.chunks.txt",
                       FIX / "anthropic/vercel-ai/anthropic-text.json", "anthropic", start=1, content=5),
    # No start event: the first chunk already carries text; content: both text chunks (not the last
    # one, which carries the signature and finishReason).
    "gemini": _wire("gemini", FIX / "gemini/vercel-ai/google-text.chunks.txt",
                    FIX / "gemini/vercel-ai/google-text.json", "gemini", start=0, content=2),
    # Start: messageStart; content: three text deltas.
    "bedrock": _wire("bedrock", FIX / "bedrock/vercel-ai/amazon-bedrock-text.chunks.txt",
                     FIX / "bedrock/vercel-ai/amazon-bedrock-text.json", "bedrock", start=1, content=4),
}


def _payloads(kind: str, frame: bytes) -> list[Any]:
    if kind == "bedrock":
        return [(headers.get(":event-type"), json.loads(payload) if payload else {})
                for headers, payload in decode_eventstream(frame)]
    parsed = parse_sse_block(frame)
    if parsed is None or parsed[1].strip() == "[DONE]":
        return []
    return [json.loads(parsed[1])]


def _frame_text(kind: str, frame: bytes) -> str:
    out = []
    for payload in _payloads(kind, frame):
        if kind == "openai" and payload.get("type") == "response.output_text.delta":
            out.append(payload["delta"])
        elif kind == "openai-chat":
            for choice in payload.get("choices") or []:
                out.append((choice.get("delta") or {}).get("content") or "")
        elif kind == "anthropic" and payload.get("type") == "content_block_delta":
            out.append(payload["delta"].get("text") or "")
        elif kind == "gemini":
            for candidate in payload.get("candidates") or []:
                for part in (candidate.get("content") or {}).get("parts") or []:
                    if not part.get("thought"):
                        out.append(part.get("text") or "")
        elif kind == "bedrock" and payload[0] == "contentBlockDelta":
            out.append(payload[1]["delta"].get("text") or "")
    return "".join(out)


def _body_text(kind: str, data: dict[str, Any]) -> str:
    if kind == "openai":
        return "".join(part["text"] for item in data["output"] if item["type"] == "message"
                       for part in item["content"] if part["type"] == "output_text")
    if kind == "openai-chat":
        return data["choices"][0]["message"]["content"]
    if kind == "anthropic":
        return "".join(block["text"] for block in data["content"] if block["type"] == "text")
    if kind == "gemini":
        return "".join(part.get("text") or "" for part in data["candidates"][0]["content"]["parts"]
                       if not part.get("thought"))
    return "".join(block.get("text") or "" for block in data["output"]["message"]["content"])


# --- errors in each protocol's own shape ------------------------------------------------------

_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable", 529: "Site Overloaded"}
# The message each failure status carries (tests look for it in what the client gets).
MESSAGES = {400: "Invalid value for 'input'.", 401: "Incorrect API key provided.",
            403: "This key may not use this model.", 404: "The model does not exist.",
            429: "Rate limit reached, retry after 1s.", 500: "The server had an error processing your request.",
            503: "The service is temporarily unavailable.", 529: "Overloaded."}
_OPENAI_CODES = {400: "invalid_value", 401: "invalid_api_key", 403: "model_not_allowed", 404: "model_not_found",
                 429: "rate_limit_exceeded", 500: "server_error", 503: "server_error", 529: "server_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 503: "api_error",
                    529: "overloaded_error"}
_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                  429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 529: "UNAVAILABLE"}
_AWS_ERRORS = {400: "ValidationException", 401: "UnrecognizedClientException", 403: "AccessDeniedException",
               404: "ResourceNotFoundException", 429: "ThrottlingException", 500: "InternalServerException",
               503: "ServiceUnavailableException", 529: "ServiceUnavailableException"}


def http_error(kind: str, status: int) -> tuple[dict[str, str], bytes]:
    """(headers, body) of an HTTP error answer as the protocol's servers send it."""
    message = MESSAGES[status]
    headers = {"content-type": "application/json"}
    if kind in ("openai", "openai-chat"):
        body: Any = {"error": {"message": message, "type": "server_error" if status >= 500 else
                               "invalid_request_error", "param": None, "code": _OPENAI_CODES[status]}}
    elif kind == "anthropic":
        body = {"type": "error", "error": {"type": _ANTHROPIC_TYPES[status], "message": message}}
    elif kind == "gemini":
        body = {"error": {"code": status, "message": message, "status": _GOOGLE_STATUS[status]}}
    else:
        headers["x-amzn-errortype"] = f"{_AWS_ERRORS[status]}:http://internal.amazon.com/coral/com.amazon.bedrock/"
        body = {"message": message}
    if status == 429:
        headers["retry-after"] = str(RETRY_AFTER)
    return headers, json.dumps(body).encode()


STREAM_ERROR_MESSAGE = "The model is overloaded. Please try again later."
STREAM_LIMIT_MESSAGE = "Rate limit reached for requests. Please try again later."


def stream_error(kind: str, after: int, *, limited: bool = False) -> list[bytes]:
    """The protocol's in-stream error report, as the frames that follow `after` frames of the answer:
    an overload, or (`limited`) a rate limit."""
    if limited:
        return _stream_limit(kind, after)
    message = STREAM_ERROR_MESSAGE
    if kind == "openai":
        recorded = RECORDINGS["openai"]
        created = json.loads(parse_sse_block(recorded.frames[0])[1])["response"]  # type: ignore[index]
        partial = _openai_partial_output(recorded.frames[:after])
        failed = {**created, "status": "failed", "output": partial,
                  "error": {"code": "server_error", "message": message}}
        return [_sse({"type": "error", "sequence_number": after,
                      "error": {"type": "server_error", "code": "server_error", "message": message, "param": None}},
                     event="error"),
                _sse({"type": "response.failed", "sequence_number": after + 1, "response": failed},
                     event="response.failed")]
    if kind == "openai-chat":
        return [_sse({"error": {"message": message, "type": "server_error", "param": None, "code": "server_error"}})]
    if kind == "anthropic":
        return [_sse({"type": "error", "error": {"type": "overloaded_error", "message": message}}, event="error")]
    if kind == "gemini":
        return [_sse({"error": {"code": 503, "message": message, "status": "UNAVAILABLE"}}, crlf=True)]
    return [encode_eventstream_frame({":exception-type": "serviceUnavailableException",
                                      ":content-type": "application/json", ":message-type": "exception"},
                                     json.dumps({"message": message}).encode())]


def _stream_limit(kind: str, after: int) -> list[bytes]:
    message = STREAM_LIMIT_MESSAGE
    if kind == "openai":
        created = json.loads(parse_sse_block(RECORDINGS["openai"].frames[0])[1])["response"]  # type: ignore[index]
        failed = {**created, "status": "failed", "error": {"code": "rate_limit_exceeded", "message": message}}
        return [_sse({"type": "error", "sequence_number": after, "error": {
                     "type": "requests", "code": "rate_limit_exceeded", "message": message, "param": None}},
                     event="error"),
                _sse({"type": "response.failed", "sequence_number": after + 1, "response": failed},
                     event="response.failed")]
    if kind == "openai-chat":
        return [_sse({"error": {"message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}})]
    if kind == "anthropic":
        return [_sse({"type": "error", "error": {"type": "rate_limit_error", "message": message}}, event="error")]
    if kind == "gemini":
        return [_sse({"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}}, crlf=True)]
    return [encode_eventstream_frame({":exception-type": "throttlingException", ":content-type": "application/json",
                                      ":message-type": "exception"}, json.dumps({"message": message}).encode())]


def _openai_partial_output(frames: tuple[bytes, ...]) -> list[dict[str, Any]]:
    """The output a Responses stream had built when it stopped after these frames."""
    items: dict[int, dict[str, Any]] = {}
    for frame in frames:
        for event in _payloads("openai", frame):
            if event.get("type") == "response.output_item.added":
                items[event["output_index"]] = {**event["item"], "content": []}
            elif event.get("type") == "response.content_part.added":
                items[event["output_index"]]["content"].append(dict(event["part"]))
            elif event.get("type") == "response.output_text.delta":
                items[event["output_index"]]["content"][event["content_index"]]["text"] += event["delta"]
    return [items[index] for index in sorted(items)]


def error_answer(kind: str, partial: bool) -> bytes:
    """A whole (non-streamed) 200 answer that reports a failure instead of an answer.

    Converse has none (it reports a whole answer's failure by HTTP status only): not asked for Bedrock.
    """
    message = STREAM_ERROR_MESSAGE
    if kind == "openai":
        body: Any = json.loads(RECORDINGS["openai"].body)
        output = body["output"] if partial else []
        body = {**body, "status": "failed", "output": output, "error": {"code": "server_error", "message": message}}
    elif kind == "openai-chat":
        body = {"error": {"message": message, "type": "server_error", "param": None, "code": "server_error"}}
    elif kind == "anthropic":
        body = {"type": "error", "error": {"type": "overloaded_error", "message": message}}
    elif kind == "gemini":
        body = {"error": {"code": 503, "message": message, "status": "UNAVAILABLE"}}
    else:
        raise ValueError("Converse has no error answer with HTTP 200")
    return json.dumps(body).encode()


def garbage(kind: str, stream: bool) -> tuple[str, bytes]:
    """(content type, body) of a 200 answer that is not the protocol at all."""
    if not stream:
        return "application/json", b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>\n"
    if kind == "bedrock":
        # A prelude whose CRC does not match, then noise.
        return "application/vnd.amazon.eventstream", struct.pack(">III", 64, 0, 12345) + b"\x07garbage" * 8
    return RECORDINGS[kind].stream_type, b"data: <html>502 Bad Gateway</html>\n\ndata: {\"unterminated\": \n\n"


def _sse(payload: Any, *, event: str | None = None, crlf: bool = False) -> bytes:
    head = f"event: {event}\n" if event else ""
    end = "\r\n\r\n" if crlf else "\n\n"
    return f"{head}data: {json.dumps(payload)}{end}".encode()


def free_port() -> int:
    """A loopback port nobody listens on (for a provider whose connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a gateway in front of it ------------------------------------------------------------------


def upstream_timeouts(first_byte: float, idle: float) -> str:
    """A provider's timeout keys: `timeouts` where the config has them, else `timeout` (the idle read)."""
    from sluice.config import ProviderConfig

    if "timeouts" in ProviderConfig.__struct_fields__:
        return f"timeouts: {{connect: 2, first_byte: {first_byte}, idle: {idle}}}"
    return f"timeout: {max(first_byte, idle)}, connect_timeout: 2"


def providers_yaml(chaos: ChaosUpstream, timeouts: str) -> str:
    """The `providers:` entries: `c-<type>` on the chaos upstream, `dead-<type>` on a port nobody listens on."""
    dead = free_port()
    lines = []
    for kind in KINDS:
        region = ", region: us-east-1" if kind == "bedrock" else ""
        for name, origin in (("c", chaos.url), ("dead", f"http://127.0.0.1:{dead}")):
            base = f"{origin}/v1" if kind in ("openai", "openai-chat") else origin
            lines.append(f"  {name}-{kind}: {{type: {kind}, base_url: \"{base}\", api_key: chaos-key-{kind}-0001, "
                         f"{timeouts}{region}}}\n")
    return "".join(lines)


# --- the server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One request the chaos upstream received."""

    kind: str  # the protocol: openai, openai-chat, anthropic, gemini, bedrock
    model: str  # the upstream model id (the route)
    failure: str  # what was played: a FAILURES name, or "ok"
    stream: bool
    at: float  # time.monotonic() when the request had been read


class _Gone(Exception):
    """The client (the gateway) closed the connection."""


class ChaosUpstream:
    """Serve every protocol from a background thread; see the module docstring."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.disconnects = 0  # connections the gateway closed while a response was still due
        self._overrides: dict[str, str] = {}
        self._seen: set[tuple[str, str]] = set()  # flaky routes that already failed once
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> ChaosUpstream:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            self._server = loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", 0))
            self._port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="chaos-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the chaos upstream did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def stop() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # -- control and observation -------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the requests received, the overrides, and which flaky routes already failed."""
        with self._lock:
            self.hits.clear()
            self.disconnects = 0
            self._overrides.clear()
            self._seen.clear()

    def override(self, model: str, failure: str | None) -> None:
        """From now on `model` plays `failure` (None: back to what its name says)."""
        with self._lock:
            if failure is None:
                self._overrides.pop(model, None)
            else:
                self._overrides[model] = failure

    def routes(self) -> list[tuple[str, str]]:
        """(protocol, model) of every request received, in arrival order."""
        with self._lock:
            return [(hit.kind, hit.model) for hit in self.hits]

    def count(self, kind: str, model: str) -> int:
        with self._lock:
            return sum(1 for hit in self.hits if hit.kind == kind and hit.model == model)

    def wait_for(self, predicate: Callable[[ChaosUpstream], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # -- serving -----------------------------------------------------------------------------------

    def _failure_of(self, kind: str, model: str) -> str:
        with self._lock:
            failure = self._overrides.get(model, model.split(".", 1)[0])
            if failure in ("flaky", "flaky-429"):
                key = (kind, model)
                if key in self._seen:
                    return "ok"
                self._seen.add(key)
            return failure

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self.hits.append(hit)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                keep = await self._serve(reader, writer, *request)
                if not keep:
                    return
        except _Gone:
            with self._lock:
                self.disconnects += 1
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str,
                     body: bytes) -> bool:
        """Answer one request; False when the connection must not be used again."""
        kind, model, stream = _route_of(target, body)
        if kind is None:
            await _send(writer, 404, {"content-type": "application/json"}, b'{"error": "no such endpoint"}')
            return True
        failure = self._failure_of(kind, model)
        self._record(Hit(kind, model, failure, stream, time.monotonic()))
        wire = RECORDINGS[kind]

        if failure in ("fail-500", "fail-503", "fail-529", "fail-429", "flaky", "flaky-429") or failure in REFUSALS:
            status = {"flaky": 503, "flaky-429": 429}.get(failure) or int(failure.split("-")[1])
            headers, payload = http_error(kind, status)
            await _send(writer, status, headers, payload)
            return True
        if failure == "reset":
            _reset(writer)
            return False
        if failure == "reset-headers":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Ty")
            await writer.drain()
            await asyncio.sleep(0.01)
            _reset(writer)
            return False
        if failure == "slow":
            await _silence(reader, SILENCE)
            failure = "ok"  # a gateway that waits this long gets its answer
        elif failure == "late":
            await _silence(reader, LATE)
        if failure == "garbage":
            content_type, payload = garbage(kind, stream)
            if stream:
                await _send_stream(writer, content_type, [payload])
            else:
                await _send(writer, 200, {"content-type": content_type}, payload)
            return True

        if not stream:
            if failure in ("error-before", "error-after"):
                await _send(writer, 200, {"content-type": "application/json"},
                            error_answer(kind, partial=failure == "error-after"))
                return True
            if failure in ("cut-before", "cut-after", "stall-after"):
                # The full Content-Length promised; none (before) or half (after) of the body sent.
                sent = b"" if failure == "cut-before" else wire.body[: len(wire.body) // 2]
                await _send_head(writer, 200, {"content-type": wire.body_type, "content-length": str(len(wire.body))})
                writer.write(sent)
                await writer.drain()
                if failure == "stall-after":
                    await _silence(reader, SILENCE)
                writer.close()
                return False
            await _send(writer, 200, {"content-type": wire.body_type}, wire.body)
            return True

        frames = list(wire.frames)
        if failure in ("cut-before", "end-before", "error-before", "stall-before", "error-before-429"):
            frames = frames[: wire.start]
        elif failure in AFTER_CONTENT:
            frames = frames[: wire.content]
        if failure in ("error-before", "error-after", "error-before-429"):
            frames += stream_error(kind, len(frames), limited=failure == "error-before-429")
        elif failure == "garbage-after":
            frames[-1] += garbage(kind, stream=True)[1]
        await _send_head(writer, 200, {"content-type": wire.stream_type, "transfer-encoding": "chunked"})
        for index, frame in enumerate(frames):
            if failure == "garbage-after" and index == len(frames) - 1:
                await asyncio.sleep(0.05)  # what came before is read (and sent on) first
            writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            await writer.drain()
        if failure in ("cut-before", "cut-after"):
            writer.close()  # FIN without the terminating chunk: the body breaks off
            return False
        if failure in ("stall-after", "stall-before"):
            await _silence(reader, SILENCE)
            writer.close()
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


def _route_of(target: str, body: bytes) -> tuple[str | None, str, bool]:
    """(protocol, upstream model, streamed) of a request."""
    parts = urlsplit(target)
    path = parts.path
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    if path.endswith("/responses"):
        return "openai", str(data.get("model")), bool(data.get("stream"))
    if path.endswith("/chat/completions"):
        return "openai-chat", str(data.get("model")), bool(data.get("stream"))
    if path.endswith("/messages"):
        return "anthropic", str(data.get("model")), bool(data.get("stream"))
    if "/models/" in path and ":" in path:
        model, _, action = path.rsplit("/", 1)[1].partition(":")
        return "gemini", unquote(model), action == "streamGenerateContent"
    if path.startswith("/model/"):
        model, _, action = path[len("/model/"):].rpartition("/")
        return "bedrock", unquote(model), action == "converse-stream"
    return None, "", False


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, bytes] | None:
    """(request target, body) of the next request on the connection; None when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    target = lines[0].split(" ")[1]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readline()
    else:
        body = await reader.readexactly(int(headers.get("content-length") or 0))
    return target, body


async def _send_head(writer: asyncio.StreamWriter, status: int, headers: dict[str, str]) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'OK' if status == 200 else 'Error')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()


async def _send(writer: asyncio.StreamWriter, status: int, headers: dict[str, str], body: bytes) -> None:
    await _send_head(writer, status, {**headers, "content-length": str(len(body))})
    writer.write(body)
    await writer.drain()


async def _send_stream(writer: asyncio.StreamWriter, content_type: str, frames: list[bytes]) -> None:
    await _send_head(writer, 200, {"content-type": content_type, "transfer-encoding": "chunked"})
    for frame in frames:
        writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _silence(reader: asyncio.StreamReader, seconds: float) -> None:
    """Say nothing for `seconds`; raise `_Gone` as soon as the gateway closes the connection."""
    with contextlib.suppress(TimeoutError):
        data = await asyncio.wait_for(reader.read(1), seconds)
        if not data:
            raise _Gone


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
