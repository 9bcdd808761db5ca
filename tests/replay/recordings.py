"""Load recorded provider traffic from ``shared/fixtures`` as replayable HTTP exchanges.

Every file kind described in ``shared/fixtures/FORMATS.md`` becomes a list of
:class:`Exchange` objects holding the exact response bytes a provider would put on
the wire (gzip and base64 undone, SSE / AWS eventstream framing rebuilt where the
fixture stores only the decoded payloads).
"""

from __future__ import annotations

import ast
import binascii
import gzip
import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import yaml

PROVIDERS: tuple[str, ...] = (
    "openai-responses",
    "openai-chat",
    "anthropic",
    "gemini",
    "bedrock",
    "mistral",
    "cohere",
)

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
JSON_CONTENT_TYPE = "application/json"

# Bodies are stored decoded and the replay server frames them itself, so these
# recorded headers would lie about the bytes actually sent. Date/Server are added
# by http.server; cookies are Cloudflare noise.
_DROPPED_HEADERS = frozenset(
    {
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "date",
        "server",
        "set-cookie",
        "alt-svc",
    }
)

# Model id used in synthesized Gemini/Bedrock paths when the fixture names none.
UNKNOWN_MODEL = "unknown-model"


@dataclass
class Exchange:
    """One recorded HTTP request/response pair, ready to replay."""

    method: str
    path: str
    request_body: dict[str, Any] | None
    status: int
    headers: dict[str, str]
    body: bytes
    stream: bool
    source: str = ""
    origin: str = ""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def is_eventstream(self) -> bool:
        return self.content_type.startswith(EVENTSTREAM_CONTENT_TYPE)

    def json(self) -> Any:
        """Parse a non-stream body as JSON."""
        if self.stream:
            raise ValueError(f"{self.source}: stream body has no single JSON value; use events()")
        return json.loads(self.body)

    def sse_events(self) -> list[tuple[str | None, str]]:
        """``(event_name, data)`` for each SSE event with data, ``[DONE]`` included."""
        if not self.stream or self.is_eventstream:
            raise ValueError(f"{self.source}: not an SSE body")
        out: list[tuple[str | None, str]] = []
        for block in split_sse(self.body):
            parsed = parse_sse_block(block)
            if parsed is not None:
                out.append(parsed)
        return out

    def events(self) -> Iterator[Any]:
        """Parsed payloads: JSON per SSE event (``[DONE]`` skipped), ``(event_type, dict)`` per
        eventstream frame, or the elements of a JSON-array body (Gemini without ``alt=sse``)."""
        if self.is_eventstream:
            for headers, payload in decode_eventstream(self.body):
                kind = headers.get(":event-type") or headers.get(":exception-type") or ""
                yield str(kind), json.loads(payload) if payload else {}
        elif self.stream:
            for _name, data in self.sse_events():
                if data.strip() != "[DONE]":
                    yield json.loads(data)
        else:
            value = self.json()
            if not isinstance(value, list):
                raise ValueError(f"{self.source}: non-stream body is not a JSON array")
            yield from value

    def frames(self) -> list[bytes]:
        """The body cut into the pieces a server should write one at a time.

        One piece per SSE event (comment-only blocks ride with the next event), per
        eventstream frame, or per element of a streamed JSON array; otherwise the
        whole body. ``b"".join(frames()) == body`` always holds.
        """
        if self.is_eventstream:
            return split_eventstream(self.body)
        if self.stream:
            frames: list[bytes] = []
            pending = b""
            for block in split_sse(self.body):
                pending += block
                if parse_sse_block(block) is not None:
                    frames.append(pending)
                    pending = b""
            if pending:
                if frames:
                    frames[-1] += pending
                else:
                    frames.append(pending)
            return frames
        if "streamGenerateContent" in self.path and self.body.startswith(b"["):
            # Gemini without alt=sse sends one pretty-printed array, element by element,
            # separated by "\n,\r\n"; each separator travels with the element after it.
            parts = self.body.split(b"\n,\r\n")
            if len(parts) > 1:
                head = [parts[0] + b"\n"]
                middle = [b",\r\n" + p + b"\n" for p in parts[1:-1]]
                return [*head, *middle, b",\r\n" + parts[-1]]
        return [self.body]


# ---------------------------------------------------------------------------
# Locating fixtures


def fixtures_root() -> Path:
    """``$SLUICE_FIXTURES`` or ``<repo>/../shared/fixtures``; FileNotFoundError when it is missing.

    The replays are the tests of every adapter: without the recordings the suite must fail at
    collection, not skip them (a skipped module reads as a passing one).
    """
    env = os.environ.get("SLUICE_FIXTURES")
    if env:
        root = Path(env).resolve()
    else:
        root = (Path(__file__).resolve().parents[2].parent / "shared" / "fixtures").resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"recorded fixtures not found at {root}: set SLUICE_FIXTURES to the shared/fixtures "
                                "folder (or put it next to the repository)")
    return root


def all_recordings(provider: str | None = None) -> list[Path]:
    """Every recording file for ``provider`` (all providers when None), sorted."""
    root = fixtures_root()
    names = [provider] if provider else list(PROVIDERS)
    for name in names:
        if name not in PROVIDERS:
            raise ValueError(f"unknown provider {name!r}; expected one of {PROVIDERS}")
    out: list[Path] = []
    for name in names:
        folder = root / name
        if folder.is_dir():
            out.extend(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".md")
    return sorted(out)


def infer_provider(path: Path) -> str:
    """Provider named by the first folder under the fixtures root (or any ancestor name)."""
    resolved = path.resolve()
    try:
        first = resolved.relative_to(fixtures_root()).parts[0]
        if first in PROVIDERS:
            return first
    except ValueError:
        pass
    for part in reversed(resolved.parts[:-1]):
        if part in PROVIDERS:
            return part
    raise ValueError(f"cannot infer provider for {path}; pass provider=")


# ---------------------------------------------------------------------------
# Public entry point


def load(path: str | Path, provider: str | None = None) -> list[Exchange]:
    """Load any recording under ``shared/fixtures`` as a list of exchanges."""
    path = Path(path)
    provider = provider or infer_provider(path)
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    name = path.name
    raw = path.read_bytes()
    if name.endswith(".chunks.txt"):
        return _load_chunks(raw, provider, str(path))
    if path.suffix in (".yaml", ".yml"):
        return _load_cassette(raw, str(path))
    if path.suffix == ".json":
        data = json.loads(raw)
        if isinstance(data, list) and data and isinstance(data[0], dict) and "response" in data[0]:
            return _load_exchange_list(data, str(path))
        return [_json_exchange(data, provider, str(path))]
    if path.suffix in (".sse", ".txt"):
        return [_sse_exchange(raw, provider, str(path))]
    raise ValueError(f"unrecognised recording kind: {path}")


# ---------------------------------------------------------------------------
# Error status rule for bare error bodies (vercel *.json)

_TYPE_STATUS = {
    # OpenAI / Anthropic / Mistral `error.code` or `error.type`
    "invalid_request_error": 400,
    "unsupported_parameter": 400,
    "unsupported_value": 400,
    "invalid_value": 400,
    "context_length_exceeded": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_error": 403,
    "permission_denied": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "api_error": 500,
    "server_error": 500,
    "internal_error": 500,
    "overloaded_error": 529,
}
_GOOGLE_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INTERNAL": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
# From specs/bedrock/service-2.json (error.httpStatusCode of each exception shape).
_BEDROCK_STATUS = {
    "ValidationException": 400,
    "ConflictException": 400,
    "ServiceQuotaExceededException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ModelStreamErrorException": 424,
    "ModelNotReadyException": 429,
    "ThrottlingException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}


def is_error_body(body: Any) -> bool:
    """True for a bare provider error object (not a response that merely has an error field)."""
    if not isinstance(body, dict):
        return False
    if body.get("type") == "error":  # Anthropic
        return True
    if "__type" in body:  # AWS JSON protocol
        return True
    # OpenAI Responses objects carry "error": null or a failure object with HTTP 200,
    # so an "error" dict only counts when the body is not itself a resource.
    return isinstance(body.get("error"), dict) and not ({"id", "object", "output"} & body.keys())


def error_status(body: Any) -> int:
    """HTTP status implied by a JSON body: 200 unless it is an error object.

    Rule, first match wins: numeric ``error.code`` (Google puts the HTTP status
    there); Google ``error.status`` canonical code; ``error.code`` then ``error.type``
    in the OpenAI/Anthropic table (so ``model_not_found`` beats
    ``invalid_request_error``); AWS ``__type``; otherwise 500.
    """
    if not is_error_body(body):
        return 200
    err = body.get("error") if isinstance(body.get("error"), dict) else {}
    code = err.get("code")
    if isinstance(code, int) and 100 <= code <= 599:
        return code
    if isinstance(err.get("status"), str) and err["status"] in _GOOGLE_STATUS:
        return _GOOGLE_STATUS[err["status"]]
    for key in (code, err.get("type")):
        if isinstance(key, str) and key in _TYPE_STATUS:
            return _TYPE_STATUS[key]
    aws_type = str(body.get("__type", "")).rsplit("#", 1)[-1]
    if aws_type in _BEDROCK_STATUS:
        return _BEDROCK_STATUS[aws_type]
    return 500


# ---------------------------------------------------------------------------
# SSE helpers

_SSE_SEPARATOR = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def split_sse(body: bytes) -> list[bytes]:
    """Cut an SSE body into blocks, each keeping its trailing blank-line separator."""
    blocks: list[bytes] = []
    pos = 0
    for match in _SSE_SEPARATOR.finditer(body):
        blocks.append(body[pos : match.end()])
        pos = match.end()
    if pos < len(body):
        blocks.append(body[pos:])
    return blocks


def parse_sse_block(block: bytes) -> tuple[str | None, str] | None:
    """``(event, data)`` of one SSE block, or None when it carries no data (comments)."""
    event: str | None = None
    data: list[str] = []
    for line in _LINE_BREAK.split(block.decode("utf-8")):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if not data:
        return None
    return event, "\n".join(data)


def _terminate_sse(body: bytes) -> bytes:
    # Some recordings (anthropic-sdk-python *.txt) stop right after the last data
    # line; a live server always ends the event with a blank line, and a strict
    # SSE parser would drop the unterminated event, so restore the terminator.
    if not body.strip() or body.endswith((b"\n\n", b"\r\n\r\n", b"\r\r")):
        return body
    sep = b"\r\n\r\n" if b"\r\n\r\n" in body else b"\n\n"
    return body.rstrip(b"\r\n") + sep


# ---------------------------------------------------------------------------
# AWS eventstream

_EVENTSTREAM_TYPES_FIXED = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}


def encode_eventstream_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS eventstream message with string-typed headers (type 7)."""
    encoded = b""
    for name, value in headers.items():
        name_b, value_b = name.encode(), value.encode()
        encoded += struct.pack(">B", len(name_b)) + name_b + struct.pack(">BH", 7, len(value_b)) + value_b
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message))


def split_eventstream(body: bytes) -> list[bytes]:
    """Cut an eventstream body into whole frames using each frame's length prefix."""
    frames: list[bytes] = []
    pos = 0
    while pos < len(body):
        if len(body) - pos < 12:
            raise ValueError(f"truncated eventstream prelude at byte {pos}")
        (total,) = struct.unpack_from(">I", body, pos)
        if total < 16 or pos + total > len(body):
            raise ValueError(f"bad eventstream frame length {total} at byte {pos}")
        frames.append(body[pos : pos + total])
        pos += total
    return frames


def decode_eventstream(body: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """``(headers, payload)`` per frame, verifying both CRCs."""
    out: list[tuple[dict[str, Any], bytes]] = []
    for frame in split_eventstream(body):
        total, headers_len, prelude_crc = struct.unpack_from(">III", frame, 0)
        if binascii.crc32(frame[:8]) != prelude_crc:
            raise ValueError("eventstream prelude CRC mismatch")
        (message_crc,) = struct.unpack_from(">I", frame, total - 4)
        if binascii.crc32(frame[: total - 4]) != message_crc:
            raise ValueError("eventstream message CRC mismatch")
        headers = _decode_eventstream_headers(frame[12 : 12 + headers_len])
        out.append((headers, frame[12 + headers_len : total - 4]))
    return out


def _decode_eventstream_headers(raw: bytes) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    pos = 0
    while pos < len(raw):
        name_len = raw[pos]
        name = raw[pos + 1 : pos + 1 + name_len].decode()
        pos += 1 + name_len
        kind = raw[pos]
        pos += 1
        value: Any
        if kind in (0, 1):
            value = kind == 0
        elif kind in _EVENTSTREAM_TYPES_FIXED:
            fmt = _EVENTSTREAM_TYPES_FIXED[kind]
            (value,) = struct.unpack_from(fmt, raw, pos)
            pos += struct.calcsize(fmt)
        elif kind in (6, 7):
            (length,) = struct.unpack_from(">H", raw, pos)
            value = raw[pos + 2 : pos + 2 + length]
            value = value.decode() if kind == 7 else value
            pos += 2 + length
        elif kind == 9:
            value = raw[pos : pos + 16]
            pos += 16
        else:
            raise ValueError(f"unknown eventstream header type {kind}")
        headers[name] = value
    return headers


_PADDING_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _bedrock_frame(line_obj: dict[str, Any], index: int) -> bytes:
    if len(line_obj) != 1:
        raise ValueError(f"bedrock chunk must have exactly one event key: {list(line_obj)}")
    ((event_type, payload),) = line_obj.items()
    # Real ConverseStream payloads carry a random-length "p" padding field with sorted
    # top-level keys; reproduce it (deterministically) so parsers meet it in replays.
    padded = dict(payload)
    padded["p"] = _PADDING_ALPHABET[: 1 + (index * 17) % len(_PADDING_ALPHABET)]
    body = json.dumps(dict(sorted(padded.items())), separators=(",", ":"), ensure_ascii=False)
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_eventstream_frame(headers, body.encode())


# ---------------------------------------------------------------------------
# vercel *.chunks.txt and *.json


def _provider_path(provider: str, model: str | None, stream: bool) -> str:
    model = model or UNKNOWN_MODEL
    if provider == "openai-responses":
        return "/v1/responses"
    if provider in ("openai-chat", "mistral"):
        return "/v1/chat/completions"
    if provider == "anthropic":
        return "/v1/messages"
    if provider == "cohere":
        return "/v2/chat"
    if provider == "gemini":
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/v1beta/models/{model}:{action}"
    if provider == "bedrock":
        return f"/model/{quote(model, safe='')}/{'converse-stream' if stream else 'converse'}"
    raise ValueError(provider)


def _model_of(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    for key in ("model", "modelVersion"):
        if isinstance(obj.get(key), str) and obj[key]:
            return obj[key]
    for key in ("response", "message"):
        found = _model_of(obj.get(key))
        if found:
            return found
    return None


_STREAM_START = {"openai-responses": "response.created", "anthropic": "message_start"}
_STREAM_END = {
    "openai-responses": {"response.completed", "response.failed", "response.incomplete"},
    "anthropic": {"message_stop"},
}


def _split_runs(lines: list[str], provider: str) -> list[list[str]]:
    # A new run starts at a start event only once the current run has finished, so
    # duplicate-message-start (two message_start in ONE stream) stays a single stream.
    start, ends = _STREAM_START.get(provider), _STREAM_END.get(provider, set())
    runs: list[list[str]] = [[]]
    finished = False
    for line in lines:
        kind = json.loads(line).get("type")
        if start and kind == start and finished:
            runs.append([])
            finished = False
        runs[-1].append(line)
        finished = finished or kind in ends
    return runs


def _chunks_body(lines: list[str], provider: str) -> tuple[bytes, str]:
    if provider in ("openai-responses", "anthropic", "cohere"):
        # Cohere v2 names each event like OpenAI Responses does (vercel's own cohere
        # test server emits `event: <type>` before each data line).
        parts = [f"event: {json.loads(line)['type']}\ndata: {line}\n\n" for line in lines]
        return "".join(parts).encode(), SSE_CONTENT_TYPE
    if provider in ("openai-chat", "mistral"):
        parts = [f"data: {line}\n\n" for line in lines] + ["data: [DONE]\n\n"]
        return "".join(parts).encode(), SSE_CONTENT_TYPE
    if provider == "gemini":
        return "".join(f"data: {line}\r\n\r\n" for line in lines).encode(), "text/event-stream"
    if provider == "bedrock":
        frames = [_bedrock_frame(json.loads(line), i) for i, line in enumerate(lines)]
        return b"".join(frames), EVENTSTREAM_CONTENT_TYPE
    raise ValueError(provider)


def _load_chunks(raw: bytes, provider: str, source: str) -> list[Exchange]:
    lines = [line.strip() for line in raw.decode("utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{source}: empty chunks file")
    model = next((m for m in (_model_of(json.loads(line)) for line in lines) if m), None)
    runs = _split_runs(lines, provider) if provider in _STREAM_START else [lines]
    out = []
    for i, run in enumerate(runs):
        body, content_type = _chunks_body(run, provider)
        out.append(
            Exchange(
                method="POST",
                path=_provider_path(provider, model, stream=True),
                request_body=None,
                status=200,
                headers={"content-type": content_type},
                body=body,
                stream=True,
                source=f"{source}#{i}",
            )
        )
    return out


def _json_exchange(data: Any, provider: str, source: str) -> Exchange:
    content_type = "application/json; charset=UTF-8" if provider == "gemini" else JSON_CONTENT_TYPE
    return Exchange(
        method="POST",
        path=_provider_path(provider, _model_of(data), stream=False),
        request_body=None,
        status=error_status(data),
        headers={"content-type": content_type},
        body=json.dumps(data, ensure_ascii=False).encode(),
        stream=False,
        source=f"{source}#0",
    )


def _sse_exchange(raw: bytes, provider: str, source: str) -> Exchange:
    return Exchange(
        method="POST",
        path=_provider_path(provider, None, stream=True),
        request_body=None,
        status=200,
        headers={"content-type": SSE_CONTENT_TYPE},
        body=_terminate_sse(raw),
        stream=True,
        source=f"{source}#0",
    )


# ---------------------------------------------------------------------------
# VCR cassettes (pydantic-ai, simonw) and anthropic-sdk-python exchange lists


def _as_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _clean_headers(raw: dict[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (raw or {}).items():
        key = _as_text(name).lower()
        if key in _DROPPED_HEADERS:
            continue
        values = value if isinstance(value, list) else [value]
        out[key] = ", ".join(_as_text(v) for v in values)
    return out


def _split_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    # The fragment (e.g. pydantic's "#stream" marker) never reaches the server.
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
    return path, origin


def _request_json(request: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(request.get("parsed_body"), dict):
        return request["parsed_body"]
    body = request.get("body")
    if isinstance(body, dict):
        return body
    if body in (None, "", b""):
        return None
    text = _as_text(body)
    try:
        value = json.loads(text)
    except ValueError:
        # anthropic-sdk-python snapshots store the request as a Python repr.
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return None  # form-encoded (oauth2 token exchange) or other non-JSON
    return value if isinstance(value, dict) else None


def _response_bytes(body: Any, raw_headers: dict[str, Any]) -> bytes:
    if isinstance(body, dict) and "string" in body:
        body = body["string"]
    if body is None:
        return b""
    if isinstance(body, (dict, list)):
        return json.dumps(body, ensure_ascii=False).encode()
    data = body if isinstance(body, bytes) else str(body).encode("utf-8")
    encoding = next(
        (_as_text(v) for k, v in (raw_headers or {}).items() if _as_text(k).lower() == "content-encoding"),
        "",
    ).lower()
    if "gzip" in encoding or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def _make_exchange(
    method: str,
    url: str,
    request_body: dict[str, Any] | None,
    status: int,
    raw_headers: dict[str, Any],
    body: bytes,
    source: str,
) -> Exchange:
    headers = _clean_headers(raw_headers)
    path, origin = _split_url(url)
    content_type = headers.get("content-type", "")
    stream = content_type.startswith(("text/event-stream", EVENTSTREAM_CONTENT_TYPE))
    if stream and not content_type.startswith(EVENTSTREAM_CONTENT_TYPE):
        body = _terminate_sse(body)
    return Exchange(
        method=method.upper(),
        path=path,
        request_body=request_body,
        status=status,
        headers=headers,
        body=body,
        stream=stream,
        source=source,
        origin=origin,
    )


def _load_cassette(raw: bytes, source: str) -> list[Exchange]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = yaml.load(raw, Loader=loader)  # safe loader; !!binary becomes bytes
    out = []
    for i, interaction in enumerate(doc["interactions"]):
        request, response = interaction["request"], interaction["response"]
        raw_headers = response.get("headers") or {}
        if "parsed_body" in response:
            body = _response_bytes(response["parsed_body"], raw_headers)
        else:
            body = _response_bytes(response.get("body"), raw_headers)
        status = response["status"]
        out.append(
            _make_exchange(
                method=request["method"],
                url=request["uri"],
                request_body=_request_json(request),
                status=int(status["code"] if isinstance(status, dict) else status),
                raw_headers=raw_headers,
                body=body,
                source=f"{source}#{i}",
            )
        )
    return out


def _load_exchange_list(data: list[dict[str, Any]], source: str) -> list[Exchange]:
    out = []
    for i, item in enumerate(data):
        request, response = item["request"], item["response"]
        raw_headers = response.get("headers") or {}
        out.append(
            _make_exchange(
                method=request["method"],
                url=request["url"],
                request_body=_request_json(request),
                status=int(response["status_code"]),
                raw_headers=raw_headers,
                body=_response_bytes(response.get("body"), raw_headers),
                source=f"{source}#{i}",
            )
        )
    return out
