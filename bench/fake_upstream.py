"""A very fast fake OpenAI upstream for benchmarks (loopback only).

Serves, with precomputed bytes and HTTP/1.1 keep-alive:

* ``POST /v1/responses``          - Responses API; JSON, or an SSE stream when the body
                                    has ``"stream": true`` (20 ``response.output_text.delta``).
* ``POST /v1/chat/completions``   - Chat Completions; JSON, or an SSE stream of 20 content
                                    deltas (+ a usage chunk when ``stream_options.include_usage``)
                                    and ``data: [DONE]``.
* ``GET  /v1/models``, ``GET /health`` - small JSON answers.

The payload shapes are copied from real recordings in
``shared/fixtures/openai-responses/simonw-llm/test_responses_basic_*.yaml`` and
``shared/fixtures/openai-chat/vercel-ai/openai-text.*`` (ids, fields and ordering as OpenAI sends
them, ``obfuscation`` included); only the text differs (20 deltas).

It is a raw ``asyncio.Protocol`` on uvloop with a minimal HTTP/1.1 parser (Content-Length or chunked
request bodies, pipelining), so one process handles well over 20k req/s and is never the
bottleneck. Streams are sent as chunked transfer encoding, one chunk per SSE event; by default the
whole stream is written at once (``--delta-interval-ms`` spaces the deltas out in time instead).

    python bench/fake_upstream.py --port 18000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys

N_DELTAS = 20
MODEL = "gpt-5.2-2025-12-11"
CREATED = 1778037176
RESP_ID = "resp_08ddf351751647d60169fab1b8a7ac81a081b9e2400e87fb63"
MSG_ID = "msg_08ddf351751647d60169fab1b9828c81a0bef694acd7d53106"
CHAT_ID = "chatcmpl-D8Z5oo6uDh67AD85p73ksdT1KxhE0"
# 20 deltas; joined they make the non-streaming text too.
DELTAS = [
    "Hello",
    "!",
    " How",
    " can",
    " I",
    " help",
    " you",
    " today",
    "?",
    " I",
    "'m",
    " happy",
    " to",
    " answer",
    " questions",
    ",",
    " write",
    " code",
    " or",
    " chat",
]
assert len(DELTAS) == N_DELTAS
TEXT = "".join(DELTAS)
OBFUSCATION = ["mZhSFjZXJr0X", "yhjoJbEF", "dTh", "Qup1BsQ3", "h9RiQLL"]
USAGE_RESP = {
    "input_tokens": 11,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": N_DELTAS,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 11 + N_DELTAS,
}
USAGE_CHAT = {
    "prompt_tokens": 11,
    "completion_tokens": N_DELTAS,
    "total_tokens": 11 + N_DELTAS,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _response_obj(status: str, output: list, usage, completed_at, service_tier: str) -> dict:
    # Same key order as the recorded gpt-5.5 Responses payloads.
    return {
        "id": RESP_ID,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "billing": {"payer": "developer"},
        "completed_at": completed_at,
        "error": None,
        "frequency_penalty": 0.0,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": MODEL,
        "moderation": None,
        "output": output,
        "parallel_tool_calls": True,
        "presence_penalty": 0.0,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "prompt_cache_retention": "24h",
        "reasoning": {"effort": "none", "summary": None},
        "safety_identifier": None,
        "service_tier": service_tier,
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 0.98,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _message(status: str, text: str | None) -> dict:
    content = [] if text is None else [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]
    return {
        "id": MSG_ID,
        "type": "message",
        "status": status,
        "content": content,
        "phase": "final_answer",
        "role": "assistant",
    }


def _chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _headers(status: str, ctype: str, extra: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"content-type: {ctype}"]
    lines += [f"{k}: {v}" for k, v in extra]
    lines += [
        "date: Wed, 06 May 2026 03:12:57 GMT",
        "openai-organization: user-bench",
        "openai-processing-ms: 3",
        "openai-version: 2020-10-01",
        "x-request-id: req_c6713bbdac8d4639a5ea09cb6c5eb5a9",
        "server: fake-upstream",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _json_response(body: bytes, status: str = "200 OK") -> bytes:
    return _headers(status, "application/json", [("content-length", str(len(body)))]) + body


def _sse_response(events: list[bytes]) -> list[bytes]:
    """Header block + one chunk per SSE event + terminating zero chunk, as separate pieces."""
    head = _headers(
        "200 OK",
        "text/event-stream; charset=utf-8",
        [("transfer-encoding", "chunked"), ("connection", "keep-alive")],
    )
    return [head] + [_chunk(e) for e in events] + [b"0\r\n\r\n"]


# --------------------------------------------------------------------------- Responses API
def build_responses_json() -> bytes:
    obj = _response_obj("completed", [_message("completed", TEXT)], USAGE_RESP, CREATED + 1, "default")
    return _dumps(obj)


def build_responses_events() -> list[bytes]:
    events: list[dict] = []
    in_progress = _response_obj("in_progress", [], None, None, "auto")
    events.append({"type": "response.created", "response": in_progress})
    events.append({"type": "response.in_progress", "response": in_progress})
    events.append({"type": "response.output_item.added", "item": _message("in_progress", None), "output_index": 0})
    events.append(
        {
            "type": "response.content_part.added",
            "content_index": 0,
            "item_id": MSG_ID,
            "output_index": 0,
            "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
        }
    )
    for i, d in enumerate(DELTAS):
        events.append(
            {
                "type": "response.output_text.delta",
                "content_index": 0,
                "delta": d,
                "item_id": MSG_ID,
                "logprobs": [],
                "obfuscation": OBFUSCATION[i % len(OBFUSCATION)],
                "output_index": 0,
            }
        )
    events.append(
        {
            "type": "response.output_text.done",
            "content_index": 0,
            "item_id": MSG_ID,
            "logprobs": [],
            "output_index": 0,
            "text": TEXT,
        }
    )
    events.append(
        {
            "type": "response.content_part.done",
            "content_index": 0,
            "item_id": MSG_ID,
            "output_index": 0,
            "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": TEXT},
        }
    )
    events.append({"type": "response.output_item.done", "item": _message("completed", TEXT), "output_index": 0})
    done = _response_obj("completed", [_message("completed", TEXT)], USAGE_RESP, CREATED + 1, "default")
    events.append({"type": "response.completed", "response": done})
    out = []
    for seq, ev in enumerate(events):
        ev["sequence_number"] = seq
        out.append(b"event: %s\ndata: %s\n\n" % (ev["type"].encode(), _dumps(ev)))
    return out


# --------------------------------------------------------------------------- Chat Completions
def build_chat_json() -> bytes:
    return _dumps(
        {
            "id": CHAT_ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": TEXT, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE_CHAT,
            "service_tier": "default",
            "system_fingerprint": "fp_de604bd877",
        }
    )


def build_chat_events(include_usage: bool) -> list[bytes]:
    def chunk(delta, finish, i, usage_field=True):
        c = {
            "id": CHAT_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "service_tier": "default",
            "system_fingerprint": "fp_de604bd877",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage and usage_field:
            c["usage"] = None
        c["obfuscation"] = OBFUSCATION[i % len(OBFUSCATION)]
        return c

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None}, None, 0)]
    chunks += [chunk({"content": d}, None, i + 1) for i, d in enumerate(DELTAS)]
    chunks.append(chunk({}, "stop", 3))
    if include_usage:
        chunks.append(
            {
                "id": CHAT_ID,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": MODEL,
                "service_tier": "default",
                "system_fingerprint": "fp_de604bd877",
                "choices": [],
                "usage": USAGE_CHAT,
                "obfuscation": "h9RiQLL",
            }
        )
    return [b"data: %s\n\n" % _dumps(c) for c in chunks] + [b"data: [DONE]\n\n"]


# --------------------------------------------------------------------------- precomputed answers
RESP_JSON = _json_response(build_responses_json())
RESP_SSE = _sse_response(build_responses_events())
CHAT_JSON = _json_response(build_chat_json())
CHAT_SSE = _sse_response(build_chat_events(include_usage=False))
CHAT_SSE_USAGE = _sse_response(build_chat_events(include_usage=True))
RESP_SSE_ALL = b"".join(RESP_SSE)
CHAT_SSE_ALL = b"".join(CHAT_SSE)
CHAT_SSE_USAGE_ALL = b"".join(CHAT_SSE_USAGE)
MODELS_JSON = _json_response(
    _dumps(
        {
            "object": "list",
            "data": [{"id": "gpt-5.2", "object": "model", "created": CREATED, "owned_by": "system"}],
        }
    )
)
HEALTH = _json_response(b'{"status":"ok"}')
NOT_FOUND = _json_response(
    b'{"error":{"message":"Unknown request URL","type":"invalid_request_error","param":null,"code":"unknown_url"}}',
    "404 Not Found",
)
BAD_REQUEST = _json_response(
    b'{"error":{"message":"Bad request","type":"invalid_request_error","param":null,"code":null}}',
    "400 Bad Request",
)

STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
USAGE_RE = re.compile(rb'"include_usage"\s*:\s*true')


class Stats:
    requests = 0


class UpstreamProtocol(asyncio.Protocol):
    __slots__ = ("buf", "delay", "transport")

    def __init__(self, delay: float):
        self.transport = None
        self.buf = b""
        self.delay = delay

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.transport = None

    def data_received(self, data: bytes):
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            body_start = end + 4
            line_end = head.find(b"\r\n")
            request_line = head if line_end < 0 else head[:line_end]
            lower = head.lower()
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                j = lower.find(b"\r\n", i + 2)
                n = int(head[i + 17 : j if j >= 0 else len(head)])
                if len(buf) < body_start + n:
                    break
                body = buf[body_start : body_start + n]
                buf = buf[body_start + n :]
            elif b"\r\ntransfer-encoding: chunked" in lower or b"\r\ntransfer-encoding:chunked" in lower:
                parsed = _parse_chunked(buf, body_start)
                if parsed is None:
                    break
                body, consumed = parsed
                buf = buf[consumed:]
            else:
                body = b""
                buf = buf[body_start:]
            close = b"\r\nconnection: close" in lower
            self.respond(request_line, body)
            if close:
                self.buf = b""
                if self.transport is not None:
                    self.transport.close()
                return
        self.buf = buf

    def respond(self, request_line: bytes, body: bytes):
        Stats.requests += 1
        parts = request_line.split(b" ")
        if len(parts) < 2:
            self.transport.write(BAD_REQUEST)
            return
        method, path = parts[0], parts[1].split(b"?", 1)[0]
        if method == b"POST" and path.endswith(b"/responses"):
            if STREAM_RE.search(body):
                self.send_stream(RESP_SSE, RESP_SSE_ALL)
            else:
                self.transport.write(RESP_JSON)
        elif method == b"POST" and path.endswith(b"/chat/completions"):
            if STREAM_RE.search(body):
                if USAGE_RE.search(body):
                    self.send_stream(CHAT_SSE_USAGE, CHAT_SSE_USAGE_ALL)
                else:
                    self.send_stream(CHAT_SSE, CHAT_SSE_ALL)
            else:
                self.transport.write(CHAT_JSON)
        elif method == b"GET" and path.endswith(b"/models"):
            self.transport.write(MODELS_JSON)
        elif method == b"GET" and path in (b"/health", b"/"):
            self.transport.write(HEALTH)
        else:
            self.transport.write(NOT_FOUND)

    def send_stream(self, pieces: list[bytes], whole: bytes):
        if not self.delay:
            self.transport.write(whole)
            return
        asyncio.get_running_loop().create_task(self._paced(pieces))

    async def _paced(self, pieces: list[bytes]):
        # Header + the four opening events at once, then one delta event per interval.
        self.transport.write(b"".join(pieces[:5]))
        for p in pieces[5:]:
            await asyncio.sleep(self.delay)
            if self.transport is None:
                return
            self.transport.write(p)


def _parse_chunked(buf: bytes, pos: int):
    out = []
    while True:
        le = buf.find(b"\r\n", pos)
        if le < 0:
            return None
        size = int(buf[pos:le].split(b";", 1)[0], 16)
        start = le + 2
        if size == 0:
            # skip (empty) trailers
            te = buf.find(b"\r\n\r\n", le)
            if buf[start : start + 2] == b"\r\n":
                return b"".join(out), start + 2
            if te < 0:
                return None
            return b"".join(out), te + 4
        if len(buf) < start + size + 2:
            return None
        out.append(buf[start : start + size])
        pos = start + size + 2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18000)
    ap.add_argument(
        "--delta-interval-ms",
        type=float,
        default=0.0,
        help="pause between streamed events (default 0: whole stream in one write)",
    )
    ap.add_argument(
        "--dump",
        choices=["responses-json", "responses-sse", "chat-json", "chat-sse"],
        help="print a precomputed answer and exit",
    )
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("fake upstream binds to loopback only")
    if args.dump:
        sys.stdout.buffer.write(
            {
                "responses-json": RESP_JSON,
                "responses-sse": RESP_SSE_ALL,
                "chat-json": CHAT_JSON,
                "chat-sse": CHAT_SSE_USAGE_ALL,
            }[args.dump]
        )
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - works, just slower
        print("fake_upstream: uvloop not installed, using asyncio's loop", file=sys.stderr)

    delay = args.delta_interval_ms / 1000.0

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: UpstreamProtocol(delay), args.host, args.port, reuse_address=True, backlog=1024
        )
        stop = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        print(f"fake upstream listening on http://{args.host}:{args.port} (pid {os.getpid()})", flush=True)
        async with server:
            await stop
        print(f"fake upstream served {Stats.requests} requests", flush=True)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
