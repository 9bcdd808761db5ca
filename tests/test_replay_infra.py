"""Tests for the replay infrastructure: every recording loads, and the server replays it faithfully."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from pathlib import Path

import pytest
from botocore.eventstream import EventStreamBuffer

try:
    from tests.replay import (
        PROVIDERS,
        Exchange,
        ReplayServer,
        all_recordings,
        decode_eventstream,
        encode_eventstream_frame,
        error_status,
        fixtures_root,
        load,
    )
except ImportError:  # pytest put tests/ itself on sys.path (no tests/__init__.py)
    from replay import (  # type: ignore[no-redef]
        PROVIDERS,
        Exchange,
        ReplayServer,
        all_recordings,
        decode_eventstream,
        encode_eventstream_frame,
        error_status,
        fixtures_root,
        load,
    )

ROOT = fixtures_root()

RECORDINGS = all_recordings()
BAD_HEADERS = {"content-length", "content-encoding", "transfer-encoding"}


def fx(rel: str) -> Path:
    return ROOT / rel


def _ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------------------
# Loading every recording


def test_every_fixture_file_is_covered() -> None:
    on_disk = {
        p
        for p in ROOT.rglob("*")
        if p.is_file() and p.relative_to(ROOT).parts[0] != "specs" and p.name not in ("SOURCES.md", "FORMATS.md")
    }
    assert on_disk == set(RECORDINGS)
    assert len(RECORDINGS) > 140
    for provider in PROVIDERS:
        assert all_recordings(provider), provider


def test_missing_fixtures_fail_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A module that needs the recordings must error at collection, never skip quietly.
    monkeypatch.setenv("SLUICE_FIXTURES", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="SLUICE_FIXTURES") as info:
        fixtures_root()
    assert str(tmp_path / "absent") in str(info.value)


@pytest.mark.parametrize("path", RECORDINGS, ids=_ids)
def test_load_recording(path: Path) -> None:
    exchanges = load(path)
    assert exchanges, path
    for ex in exchanges:
        assert ex.method in {"GET", "POST", "DELETE", "PUT", "PATCH"}
        assert ex.path.startswith("/") and "#" not in ex.path
        assert 200 <= ex.status < 600
        assert ex.body, ex.source
        assert all(k == k.lower() for k in ex.headers)
        assert not BAD_HEADERS & ex.headers.keys()
        assert ex.request_body is None or isinstance(ex.request_body, dict)
        assert b"".join(ex.frames()) == ex.body
        if ex.is_eventstream:
            assert ex.stream
            events = list(ex.events())
            assert events and all(isinstance(kind, str) and isinstance(p, dict) for kind, p in events)
            assert len(events) == len(ex.frames())
        elif ex.stream:
            assert ex.content_type.startswith("text/event-stream")
            assert ex.body.endswith((b"\n\n", b"\r\n\r\n")), "SSE body must end with a blank line"
            events = list(ex.events())
            assert events and all(isinstance(e, dict) for e in events)
            assert len(ex.frames()) == len(ex.sse_events())
        else:
            assert "json" in ex.content_type
            body = ex.json()
            assert isinstance(body, (dict, list))
            if ex.status >= 400:
                assert isinstance(body, dict) and ("error" in body or "message" in body)


def test_split_concatenated_openai_responses() -> None:
    exchanges = load(fx("openai-responses/vercel-ai/openai-reasoning-encrypted-content.1.chunks.txt"))
    assert len(exchanges) == 4
    for ex in exchanges:
        types = [e["type"] for e in ex.events()]
        assert types[0] == "response.created" and types[-1] == "response.completed"
        assert types.count("response.created") == 1
        assert ex.path == "/v1/responses"
        assert ex.body.startswith(b"event: response.created\ndata: {")


def test_duplicate_message_start_stays_one_stream() -> None:
    (ex,) = load(fx("anthropic/vercel-ai/duplicate-message-start.chunks.txt"))
    types = [e["type"] for e in ex.events()]
    assert types.count("message_start") == 2 and types[-1] == "message_stop"


@pytest.mark.parametrize(
    ("rel", "head", "tail"),
    [
        ("openai-chat/vercel-ai/openai-text.chunks.txt", b"data: {", b"}\n\ndata: [DONE]\n\n"),
        ("mistral/vercel-ai/mistral-text.chunks.txt", b"data: {", b"}\n\ndata: [DONE]\n\n"),
        ("anthropic/vercel-ai/anthropic-text.chunks.txt", b"event: message_start\ndata: {", b"}\n\n"),
        ("cohere/vercel-ai/cohere-text.chunks.txt", b"event: message-start\ndata: {", b"}\n\n"),
        ("gemini/vercel-ai/google-text.chunks.txt", b"data: {", b"}\r\n\r\n"),
    ],
)
def test_chunks_wire_framing(rel: str, head: bytes, tail: bytes) -> None:
    (ex,) = load(fx(rel))
    assert ex.body.startswith(head) and ex.body.endswith(tail)
    source_lines = [json.loads(line) for line in fx(rel).read_text().splitlines() if line.strip()]
    assert list(ex.events()) == source_lines


def test_gemini_chunks_path_uses_model() -> None:
    (ex,) = load(fx("gemini/vercel-ai/google-text.chunks.txt"))
    assert ex.path == "/v1beta/models/gemini-3-pro-preview:streamGenerateContent?alt=sse"
    assert ex.body.count(b"\r\n\r\n") == len(ex.frames())


def test_provider_override() -> None:
    # The same chunks framed as OpenAI-compatible chat rather than Cohere events.
    (ex,) = load(fx("cohere/vercel-ai/cohere-text.chunks.txt"), provider="openai-chat")
    assert ex.body.startswith(b"data: {") and ex.path == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("rel", "status"),
    [
        ("openai-responses/vercel-ai/openai-error.1.json", 429),
        ("openai-responses/vercel-ai/reasoning-model-temperature-error.json", 400),
        ("openai-chat/vercel-ai/reasoning-model-legacy-parameter-error.json", 400),
        ("gemini/vercel-ai/google-429-retry-info.json", 429),
        ("anthropic/vercel-ai/anthropic-web-fetch-tool.error.json", 200),
        ("openai-responses/vercel-ai/openai-phase.1.json", 200),
    ],
)
def test_vercel_json_status(rel: str, status: int) -> None:
    (ex,) = load(fx(rel))
    assert ex.status == status and not ex.stream


def test_error_status_rule() -> None:
    assert error_status({"type": "error", "error": {"type": "overloaded_error", "message": "x"}}) == 529
    assert error_status({"type": "error", "error": {"type": "not_found_error"}}) == 404
    assert error_status({"error": {"type": "invalid_request_error", "code": "model_not_found"}}) == 404
    assert error_status({"error": {"type": "invalid_request_error", "code": None}}) == 400
    assert error_status({"error": {"code": 503, "status": "UNAVAILABLE"}}) == 503
    assert error_status({"error": {"status": "PERMISSION_DENIED"}}) == 403
    assert error_status({"__type": "com.amazon#ThrottlingException", "message": "slow"}) == 429
    assert error_status({"error": {"type": "something_new"}}) == 500
    # A Responses object that failed is still an HTTP 200 resource.
    assert error_status({"id": "resp_1", "object": "response", "error": {"code": "server_error"}}) == 200


def test_gzip_cassette_is_decoded() -> None:
    (ex,) = load(fx("openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml"))
    assert ex.json()["object"] == "response"
    assert ex.request_body is not None and "model" in ex.request_body
    ex = load(fx("anthropic/simonw-llm-anthropic/test_schema_prompt.yaml"))[0]
    assert ex.stream and ex.body.startswith(b"event: message_start")


def test_gemini_json_array_stream() -> None:
    (ex,) = load(fx("gemini/simonw-llm-gemini/test_prompt.yaml"))
    assert not ex.stream and isinstance(ex.json(), list)
    assert len(ex.frames()) == len(ex.json()) > 1
    assert ex.frames()[0].startswith(b"[{") and ex.frames()[-1].endswith(b"]")


def test_anthropic_sdk_exchange_list() -> None:
    exchanges = load(fx("anthropic/anthropic-sdk-python/a8b7dbb8-2321-4624-abdb-7ba2136b5c38.json"))
    assert [ex.status for ex in exchanges] == [429, 429, 200]
    assert exchanges[0].headers["x-should-retry"] == "true"
    assert exchanges[0].json()["error"]["type"] == "rate_limit_error"
    # The snapshot stores the request body as a Python repr; it still parses.
    assert exchanges[0].request_body is not None and exchanges[0].request_body["model"] == "claude-sonnet-4-5"
    assert exchanges[2].stream


def test_unterminated_sse_file_is_terminated() -> None:
    raw = fx("anthropic/anthropic-sdk-python/basic_response.txt").read_bytes()
    assert not raw.endswith(b"\n")
    (ex,) = load(fx("anthropic/anthropic-sdk-python/basic_response.txt"))
    assert ex.body == raw + b"\n\n"
    assert list(ex.events())[-1] == {"type": "message_stop"}


def test_openrouter_comment_rides_with_first_event() -> None:
    (ex,) = load(fx("openai-responses/pydantic-ai/test_openai_responses_raw_cot_stream_openrouter.yaml"))
    first = ex.frames()[0]
    assert first.startswith(b": OPENROUTER PROCESSING\n\ndata: {")
    assert next(ex.events())["type"] == "response.created"


# ---------------------------------------------------------------------------
# Bedrock eventstream


def _botocore_frames(body: bytes) -> list[tuple[dict[str, object], bytes]]:
    buf = EventStreamBuffer()
    buf.add_data(body)
    return [(msg.headers, msg.payload) for msg in buf]


@pytest.mark.parametrize("path", all_recordings("bedrock"), ids=_ids)
def test_bedrock_streams_parse_with_botocore(path: Path) -> None:
    for ex in load(path):
        if not ex.is_eventstream:
            continue
        parsed = _botocore_frames(ex.body)
        assert parsed == decode_eventstream(ex.body)
        for headers, _payload in parsed:
            assert headers[":message-type"] == "event"
            assert headers[":content-type"] == "application/json"
        if path.name.endswith(".chunks.txt"):
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            decoded = [{kind: {k: v for k, v in p.items() if k != "p"}} for kind, p in ex.events()]
            assert decoded == lines
            assert all("p" in p for _, p in ex.events())  # padding like the real service


def test_eventstream_encoder_roundtrip() -> None:
    frame = encode_eventstream_frame({":event-type": "messageStop"}, b'{"stopReason":"end_turn"}')
    ((headers, payload),) = _botocore_frames(frame)
    assert headers == {":event-type": "messageStop"} and payload == b'{"stopReason":"end_turn"}'


# ---------------------------------------------------------------------------
# ReplayServer


def _conn(srv: ReplayServer, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)


def test_server_json_and_sse_on_one_keepalive_connection() -> None:
    plain = load(fx("openai-responses/vercel-ai/openai-error.1.json"))[0]
    stream = load(fx("openai-responses/pydantic-ai/test_openai_responses_stream.yaml"))[0]
    with ReplayServer() as srv:
        srv.enqueue([plain, stream])
        conn = _conn(srv)
        conn.request("POST", "/v1/responses", body=b'{"model":"m"}', headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 429 and resp.read() == plain.body
        assert resp.getheader("content-type") == "application/json"
        sock_before = conn.sock
        conn.request("POST", "/somewhere/else", body=b"not json")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("transfer-encoding") == "chunked"
        assert resp.read() == stream.body
        assert conn.sock is sock_before, "keep-alive connection was not reused"
        conn.close()
        assert [r.path for r in srv.requests] == ["/v1/responses", "/somewhere/else"]
        assert srv.requests[0].json == {"model": "m"} and srv.requests[1].json is None
        assert srv.requests[0].headers["content-type"] == "application/json"
        assert srv.served[1][1] is stream and srv.pending() == 0


def test_server_empty_queue_is_500() -> None:
    with ReplayServer() as srv:
        conn = _conn(srv)
        conn.request("GET", "/v1/models")
        resp = conn.getresponse()
        assert resp.status == 500
        assert "replay queue empty" in json.loads(resp.read())["error"]["message"]
        srv.reset()
        assert srv.requests == []


def test_server_streams_incrementally() -> None:
    ex = load(fx("anthropic/vercel-ai/anthropic-text.chunks.txt"))[0]
    with ReplayServer(event_delay=0.03) as srv:
        srv.enqueue(ex)
        conn = _conn(srv)
        start = time.monotonic()
        conn.request("POST", "/v1/messages", body=b"{}")
        resp = conn.getresponse()
        first = resp.read1()
        first_at = time.monotonic() - start
        rest = resp.read()
        total = time.monotonic() - start
        assert first == ex.frames()[0]
        assert first + rest == ex.body
        # The first event arrives long before the paced remainder has been sent.
        assert total >= 0.03 * (len(ex.frames()) - 1)
        assert first_at < total / 3


def test_server_fail_after_events() -> None:
    ex = load(fx("openai-chat/vercel-ai/openai-text.chunks.txt"))[0]
    with ReplayServer() as srv:
        srv.enqueue(ex, fail_after_events=3)
        conn = _conn(srv)
        conn.request("POST", "/v1/chat/completions", body=b"{}")
        resp = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        assert info.value.partial == b"".join(ex.frames()[:3])
        assert srv.wait_for(lambda s: s.aborted == 1) and srv.disconnects == 0


def test_server_counts_client_disconnect_during_delay() -> None:
    ex = load(fx("openai-responses/vercel-ai/openai-phase.1.json"))[0]
    with ReplayServer() as srv:
        srv.enqueue(ex, delay_before_headers=2.0)
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert srv.wait_for(lambda s: len(s.requests) == 1)
        sock.close()
        start = time.monotonic()
        assert srv.wait_for_disconnects(1, timeout=1.0)
        assert time.monotonic() - start < 1.0


def test_server_counts_client_disconnect_mid_stream() -> None:
    ex = load(fx("openai-responses/vercel-ai/openai-web-search-tool.1.chunks.txt"))[0]
    with ReplayServer(event_delay=0.02) as srv:
        srv.enqueue(ex)
        conn = _conn(srv)
        conn.request("POST", "/v1/responses", body=b"{}")
        resp = conn.getresponse()
        resp.read1()
        conn.sock.close()  # hang up mid-stream
        conn.close()
        assert srv.wait_for_disconnects(1, timeout=2.0)


def test_server_bedrock_eventstream_roundtrip() -> None:
    ex = load(fx("bedrock/vercel-ai/amazon-bedrock-tool-call.1.chunks.txt"))[0]
    with ReplayServer() as srv:
        srv.enqueue(ex)
        conn = _conn(srv)
        conn.request("POST", "/model/x/converse-stream", body=b"{}")
        resp = conn.getresponse()
        assert resp.getheader("content-type") == "application/vnd.amazon.eventstream"
        body = resp.read()
    frames = _botocore_frames(body)
    assert [h[":event-type"] for h, _ in frames] == [kind for kind, _ in ex.events()]


def test_server_with_aiohttp_reads_sse_incrementally() -> None:
    aiohttp = pytest.importorskip("aiohttp")
    ex = load(fx("gemini/vercel-ai/google-stream-tool-call-arguments.chunks.txt"))[0]
    second = load(fx("gemini/vercel-ai/google-text.json"))[0]

    async def run(url: str) -> tuple[list[bytes], dict[str, object]]:
        chunks: list[bytes] = []
        async with aiohttp.ClientSession() as session:
            async with session.post(url + ex.path, json={"contents": []}) as resp:
                assert resp.status == 200
                async for data, _end in resp.content.iter_chunks():
                    chunks.append(data)
            async with session.post(url + second.path, json={}) as resp:
                return chunks, await resp.json()

    with ReplayServer(event_delay=0.01) as srv:
        srv.enqueue([ex, second])
        chunks, body = asyncio.run(run(srv.url))
    assert b"".join(chunks) == ex.body
    assert len(chunks) > 1, "aiohttp saw the stream as a single chunk"
    assert body == second.json()


def test_exchange_is_plain_dataclass() -> None:
    ex = Exchange("POST", "/v1/responses", None, 200, {"content-type": "text/event-stream"}, b"data: {}\n\n", True)
    assert list(ex.events()) == [{}]
    with pytest.raises(ValueError):
        ex.json()


def test_server_with_aiohttp_truncation_and_cancellation() -> None:
    aiohttp = pytest.importorskip("aiohttp")
    ex = load(fx("openai-chat/vercel-ai/openai-text.chunks.txt"))[0]

    async def run(url: str) -> bytes:
        received = b""
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientPayloadError):
                async with session.post(url + "/v1/chat/completions", json={}) as resp:
                    async for data in resp.content.iter_any():
                        received += data
            # A client that gives up while waiting for headers (gateway cancellation).
            task = asyncio.create_task(session.post(url + "/v1/chat/completions", json={}))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return received

    with ReplayServer() as srv:
        srv.enqueue(ex, fail_after_events=5)
        srv.enqueue(ex, delay_before_headers=3.0)
        received = asyncio.run(run(srv.url))
        assert received == b"".join(ex.frames()[:5])
        assert srv.wait_for_disconnects(1, timeout=2.0)
        assert srv.aborted == 1
