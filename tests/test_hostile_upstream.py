"""Upstreams are untrusted: a hostile upstream cannot steer, flood or leak through the gateway.

Every test drives a real gateway over HTTP in front of `HostileUpstream` (tests/hostile_upstream.py):
redirects are never followed (no credential and no prompt reach the other origin), bodies are
read up to a cap, and a credential echoed back by the upstream, however short, never reaches the
client or the log.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluice.config import ConfigError, ProviderConfig, parse_config
from sluice.providers import create_adapter
from sluice.providers.sse import SSEDecoder
from tests.conftest import MASTER_KEY, RunningGateway, _free_port, running_gateway
from tests.hostile_upstream import HostileUpstream
from tests.replay.recordings import all_recordings, fixtures_root, load

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
KINDS = ["openai", "openai-chat", "anthropic", "gemini", "bedrock"]
PROMPT = "my private prompt, for the configured provider only"
MiB = 1024 * 1024

# Credentials the gateway holds (none shaped like a real key, so no scanner mistakes them for one).
SECRETS = {kind: f"{kind}-provider-credential-0001" for kind in KINDS}
HEADER_SECRET = "configured-secret-header-value-01"
# Short ones: a 3-character key and a 2-character header value must be redacted too.
SHORT_KEY, SHORT_HEADER = "Zq7", "T9"

BACKUP_ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "backup",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "answered by the backup"},
                              "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}}


def _provider(kind: str, base: str, key: str, header: str, extra: str = "") -> str:
    url = f"{base}/v1" if kind in ("openai", "openai-chat") else base
    region = "\n    region: us-east-1" if kind == "bedrock" else ""
    return (f"    type: {kind}\n    base_url: {url}\n    api_key: {key}\n"
            f"    headers: {{x-tenant: {header}}}{region}{extra}\n")


def _config(db: Path, hostile: str, backup: str, extra: str = "") -> str:
    providers, models = [], []
    for kind in KINDS:
        providers.append(f"  p-{kind}:\n" + _provider(kind, hostile, SECRETS[kind], HEADER_SECRET, extra))
        providers.append(f"  s-{kind}:\n" + _provider(kind, hostile, SHORT_KEY, SHORT_HEADER, extra))
        for prefix in ("p", "s"):
            models.append(f"  {prefix}-{kind}:\n    routes:\n      - {{provider: {prefix}-{kind}, model: model-x}}\n")
    providers.append(f"  backup:\n    type: openai-chat\n    base_url: {backup}/v1\n    api_key: backup-key-000001\n")
    models.append("  anthropic-then-backup:\n    routes:\n      - {provider: p-anthropic, model: model-x}\n"
                  "      - {provider: backup, model: backup-model}\n")
    models.append("  chat-then-backup:\n    routes:\n      - {provider: p-openai-chat, model: model-x}\n"
                  "      - {provider: backup, model: backup-model}\n")
    return (f"database: sqlite:///{db}\nmaster_key: {MASTER_KEY}\nbuiltin_catalog: false\n"
            f"providers:\n{''.join(providers)}models:\n{''.join(models)}")


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    with HostileUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[HostileUpstream]:
    """Another origin: where a hostile upstream would like the gateway's requests to go."""
    with HostileUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def backup() -> Iterator[HostileUpstream]:
    """A well-behaved provider, the second route of the failover models."""
    with HostileUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(hostile: HostileUpstream, backup: HostileUpstream,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("hostile-db") / "sluice.db"
    with running_gateway(_config(db, hostile.url, backup.url)) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(hostile: HostileUpstream, elsewhere: HostileUpstream, backup: HostileUpstream) -> None:
    hostile.reset()
    elsewhere.answer(200, {"id": "stolen", "output": [], "choices": [], "candidates": [], "content": []})
    backup.answer(200, BACKUP_ANSWER)


def post(gw: RunningGateway, model: str, *, stream: bool = False, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/responses", headers=AUTH, timeout=timeout,
                      json={"model": model, "input": PROMPT, "stream": stream})


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def assert_no_secret(text: str) -> None:
    for secret in [*SECRETS.values(), HEADER_SECRET, SHORT_KEY, SHORT_HEADER]:
        assert secret not in text


# --- redirects ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("kind", KINDS)
def test_upstream_redirect_is_not_followed(gw: RunningGateway, hostile: HostileUpstream,
                                           elsewhere: HostileUpstream, kind: str, status: int) -> None:
    hostile.redirect(status, f"{elsewhere.url}/collect?token=location-query-secret")
    resp = post(gw, f"p-{kind}")
    # Nothing reached the other origin: not the provider's key or headers, not the prompt.
    assert elsewhere.requests == []
    assert len(hostile.requests) == 1
    sent = hostile.requests[0]  # the configured upstream did get them
    assert SECRETS[kind] in " ".join(sent.headers.values()) and PROMPT.encode() in sent.body
    # The route failed (no route left: 424), saying why, without the Location's query.
    assert resp.status_code == 424
    error = resp.json()["error"]
    assert error["code"] == "upstream_redirect"
    assert f"HTTP {status}" in error["message"] and "redirect" in error["message"]
    assert elsewhere.url in error["message"]  # the origin it pointed to, for the operator
    assert "location-query-secret" not in resp.text and "/collect" not in resp.text
    assert_no_secret(resp.text)


def test_redirect_fails_the_route_not_the_request(gw: RunningGateway, hostile: HostileUpstream,
                                                  elsewhere: HostileUpstream, backup: HostileUpstream) -> None:
    hostile.redirect(308, f"{elsewhere.url}/v1/chat/completions")
    resp = post(gw, "chat-then-backup")
    assert elsewhere.requests == [] and len(backup.requests) == 1
    assert resp.status_code == 200
    assert resp.json()["output"][0]["content"][0]["text"] == "answered by the backup"


def test_redirect_before_a_stream_starts(gw: RunningGateway, hostile: HostileUpstream,
                                         elsewhere: HostileUpstream) -> None:
    hostile.redirect(307, f"{elsewhere.url}/v1/messages")
    resp = post(gw, "p-anthropic", stream=True)
    assert elsewhere.requests == []
    assert resp.status_code == 424 and resp.json()["error"]["code"] == "upstream_redirect"


# --- credentials echoed back -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_short_credentials_echoed_by_the_upstream_are_redacted(
        gw: RunningGateway, hostile: HostileUpstream, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    hostile.echo_credentials(401)
    with caplog.at_level(logging.INFO):
        resp = post(gw, f"s-{kind}")
    echoed = " ".join(hostile.requests[0].headers.values())
    assert SHORT_KEY in echoed and SHORT_HEADER in echoed  # the upstream did echo them back
    assert resp.status_code == 424  # the provider refused Sluice's credentials: not the client's 401
    assert "invalid credentials, you sent" in resp.json()["error"]["message"]
    assert_no_secret(resp.text)
    assert "route s-" in caplog.text  # the failure was logged...
    assert_no_secret(caplog.text)  # ...without the credentials


def test_redaction_of_short_secrets_keeps_the_text_readable() -> None:
    adapter = create_adapter("p", ProviderConfig(type="openai-chat", api_key="e", headers={
        "authorization": "Token abcdef", "x-part": "abc", "x-long": "abcdefgh"}))
    # Longest first and in one pass: "abcdefgh" is not left as "[redacted]gh", and the one-letter
    # secret "e" does not eat into the "[redacted]" markers already written.
    assert adapter.redact_secrets("got abcdefgh / abcdef / abc, then e") == (
        "got [redacted] / [redacted] / [redacted], th[redacted]n [redacted]")
    slashed = create_adapter("b", ProviderConfig(type="openai-chat", api_key="a/b+c"))
    assert slashed.redact_secrets("url?key=a%2Fb%2Bc") == "url?key=[redacted]"  # its URL-encoded form too


# --- Anthropic: the HTTP status first --------------------------------------------------------------------


@pytest.mark.parametrize("body_type", ["authentication_error", "invalid_request_error"])
def test_anthropic_http_status_wins_over_body_type(gw: RunningGateway, hostile: HostileUpstream,
                                                   backup: HostileUpstream, body_type: str) -> None:
    hostile.answer(500, {"type": "error", "error": {"type": body_type, "message": "proxy says no"}})
    resp = post(gw, "p-anthropic")
    assert resp.status_code == 424  # a 500: the route failed, not the client's key or request
    assert resp.json()["error"]["type"] == "upstream_error"
    # ...so another route is tried (a 400 would have stopped routing).
    resp = post(gw, "anthropic-then-backup")
    assert resp.status_code == 200 and len(backup.requests) == 1


def test_anthropic_error_inside_a_200_takes_its_status_from_the_type(
        gw: RunningGateway, hostile: HostileUpstream, backup: HostileUpstream) -> None:
    hostile.answer(200, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad field"}})
    resp = post(gw, "anthropic-then-backup")
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"
    assert backup.requests == []  # the request itself is wrong: no failover
    hostile.answer(200, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    resp = post(gw, "p-anthropic")
    assert resp.status_code == 429


# --- oversized bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_huge_error_body_is_not_read(gw: RunningGateway, hostile: HostileUpstream, kind: str) -> None:
    hostile.huge(500, 200 * MiB, content_type="text/html", prefix=b"<html>upstream exploded")
    started = time.monotonic()
    resp = post(gw, f"p-{kind}")
    assert resp.status_code == 424
    assert "upstream exploded" in resp.json()["error"]["message"]  # the start is read for the message
    # ...and the rest is not: the gateway hung up long before the 200 MB were sent.
    assert hostile.answered.wait(10) and hostile.hung_up
    assert hostile.sent < 32 * MiB
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("content_length", [False, True])
def test_huge_json_answer_is_refused_at_the_default_cap(gw: RunningGateway, hostile: HostileUpstream,
                                                        content_length: bool) -> None:
    hostile.huge(200, 256 * MiB, prefix=b'{"id": "chatcmpl-1", "choices": [', content_length=content_length)
    resp = post(gw, "p-openai-chat")
    assert resp.status_code == 424
    error = resp.json()["error"]
    assert error["code"] == "upstream_response_too_large"
    assert f"{64 * MiB} bytes" in error["message"] and "max_response_bytes" in error["message"]
    assert hostile.answered.wait(10) and hostile.hung_up
    # A declared length over the cap is refused before reading; otherwise reading stops at the cap.
    assert hostile.sent < (32 * MiB if content_length else 64 * MiB + 32 * MiB)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini", "bedrock"])
def test_endless_stream_event_fails_the_route(gw: RunningGateway, hostile: HostileUpstream, kind: str) -> None:
    if kind == "bedrock":
        hostile.endless_eventstream(declared=20 * MiB)  # botocore alone would wait for all 20 MiB
    else:
        hostile.endless_sse()
    resp = post(gw, f"p-{kind}", stream=True)
    # Nothing was sent to the client yet: the route failed, with the reason.
    assert resp.status_code == 424
    error = resp.json()["error"]
    assert error["code"] == "upstream_response_too_large"
    assert f"{16 * MiB} bytes" in error["message"] and "max_event_bytes" in error["message"]
    assert hostile.answered.wait(10) and hostile.hung_up
    assert hostile.sent < 16 * MiB + 32 * MiB


def test_endless_event_mid_stream_ends_in_response_failed(gw: RunningGateway, hostile: HostileUpstream) -> None:
    first = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]}
    hostile.endless_sse(prefix=b"data: " + json.dumps(first).encode() + b"\n\n")
    resp = post(gw, "p-openai-chat", stream=True)
    assert resp.status_code == 200
    events = sse_events(resp.text)
    assert any(e["type"] == "response.output_text.delta" and e["delta"] == "Hel" for e in events)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-2]["code"] == "upstream_response_too_large"
    assert hostile.answered.wait(10) and hostile.hung_up


@pytest.mark.parametrize("kind", KINDS)
def test_configured_caps(hostile: HostileUpstream, backup: HostileUpstream, tmp_path: Path, kind: str) -> None:
    caps = "\n    max_response_bytes: 1048576\n    max_event_bytes: 65536"
    with running_gateway(_config(tmp_path / "sluice.db", hostile.url, backup.url, caps)) as gw:
        hostile.huge(200, 64 * MiB, prefix=b"[")
        resp = post(gw, f"p-{kind}")
        assert resp.status_code == 424
        assert resp.json()["error"]["code"] == "upstream_response_too_large"
        assert "1048576 bytes" in resp.json()["error"]["message"]
        if kind == "bedrock":
            hostile.endless_eventstream(declared=1 * MiB)
        elif kind == "gemini":
            # Without alt=sse (a proxy dropping the query) Gemini streams one JSON array: a whole answer.
            hostile.huge(200, 64 * MiB, prefix=b"[")
        else:
            hostile.endless_sse()
        # Before any content, every protocol's stream fails the route like a whole answer would.
        resp = post(gw, f"p-{kind}", stream=True)
        assert resp.status_code == 424
        error = resp.json()["error"]
        assert error["code"] == "upstream_response_too_large"
        assert ("1048576 bytes" if kind == "gemini" else "65536 bytes") in error["message"]


def test_caps_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_event_bytes"):
        parse_config("providers:\n  p: {type: openai, max_event_bytes: 0}\n")


# --- SSE reading stays correct with the cap ---------------------------------------------------------------


def test_sse_decoder_same_events_for_any_chunking_of_recorded_streams() -> None:
    bodies = []
    for provider in ("openai-responses", "openai-chat", "anthropic", "gemini"):
        for path in all_recordings(provider):
            bodies += [ex.body for ex in load(path) if ex.stream and not ex.is_eventstream]
    assert len(bodies) > 50, f"too few recorded streams under {fixtures_root()}"
    for body in bodies:
        whole = SSEDecoder()
        expected = whole.feed(body) + whole.flush()
        assert expected
        for step in (1, 2, 3, 7, 64, 4096) if len(body) < 20_000 else (3, 64, 4096):
            decoder = SSEDecoder()
            events = []
            for i in range(0, len(body), step):
                events += decoder.feed(body[i:i + step])
            assert events + decoder.flush() == expected


def test_sse_decoder_refuses_an_event_over_its_cap() -> None:
    from sluice.providers.transport import ResponseTooLarge

    decoder = SSEDecoder(max_event_bytes=1000)
    assert decoder.feed(b"data: " + b"x" * 900 + b"\n\n") == [(None, b"x" * 900)]  # under the cap: fine
    with pytest.raises(ResponseTooLarge):
        for _ in range(20):
            decoder.feed(b"data: " + b"y" * 100)


# --- URL credentials in base_url ---------------------------------------------------------------------


def test_base_url_credentials_are_refused_at_config_load() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("providers:\n  corp:\n    type: openai-chat\n"
                     "    base_url: https://alice:pa55word-in-url@llm.example/v1\n")
    message = str(info.value)
    assert "corp" in message and "api_key" in message and "headers" in message
    assert "pa55word-in-url" not in message


def test_serve_refuses_base_url_credentials(tmp_path: Path) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text("builtin_catalog: true\nproviders:\n  corp:\n    type: openai-chat\n"
                      "    base_url: http://alice:pa55word-in-url@127.0.0.1:9/v1\n")
    command = [sys.executable, "-m", "sluice", "serve", "--port", str(_free_port())]
    result = subprocess.run([*command, "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "corp" in result.stderr and "api_key" in result.stderr and "pa55word-in-url" not in result.stderr
    # A built-in provider's URL variable is checked too.
    config.write_text(f"database: sqlite:///{tmp_path / 'sluice.db'}\n")
    env = {"PATH": "/usr/bin:/bin", "OLLAMA_BASE_URL": "http://bob:pa55word-in-env@127.0.0.1:11434/v1"}
    result = subprocess.run([*command, "--config", str(config)], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 2
    assert "OLLAMA_BASE_URL" in result.stderr or "base_url" in result.stderr
    assert "api_key" in result.stderr and "pa55word-in-env" not in result.stderr


# --- credentials echoed inside a stream --------------------------------------------------------------


def _stream_with_echo(kind: str, after_content: bool) -> Any:
    """A 200 stream, in the protocol's own shapes, whose error report echoes the request's headers."""

    def behaviour(h: Any) -> None:
        echoed = "; ".join(f"{name}={value}" for name, value in h.headers.items())
        message = f"upstream failure, you sent: {echoed}"
        events: list[tuple[str | None, dict[str, Any]]] = []
        if kind == "openai":
            item = {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
            if after_content:
                events += [("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                                           "item": item}),
                           ("response.content_part.added", {"type": "response.content_part.added", "item_id": "msg_1",
                                                            "output_index": 0, "content_index": 0,
                                                            "part": {"type": "output_text", "text": "",
                                                                     "annotations": []}}),
                           ("response.output_text.delta", {"type": "response.output_text.delta", "item_id": "msg_1",
                                                           "output_index": 0, "content_index": 0, "delta": "Hel"})]
            events += [("error", {"type": "error", "error": {"code": "server_error", "message": message}}),
                       ("response.failed", {"type": "response.failed", "response": {
                           "status": "failed", "output": [], "error": {"code": "server_error", "message": message}}})]
        elif kind == "openai-chat":
            if after_content:
                events.append((None, {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}))
            events.append((None, {"error": {"message": message, "code": "server_error"}}))
        elif kind == "anthropic":
            if after_content:
                events += [("message_start", {"type": "message_start", "message": {"id": "m", "type": "message",
                                              "role": "assistant", "content": [], "usage": {"input_tokens": 1}}}),
                           ("content_block_start", {"type": "content_block_start", "index": 0,
                                                    "content_block": {"type": "text", "text": ""}}),
                           ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "text_delta", "text": "Hel"}})]
            events.append(("error", {"type": "error", "error": {"type": "api_error", "message": message}}))
        else:  # gemini
            if after_content:
                events.append((None, {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]}))
            events.append((None, {"error": {"code": 500, "message": message, "status": "INTERNAL"}}))
        body = b"".join((f"event: {name}\n" if name else "").encode() + b"data: " + json.dumps(data).encode()
                        + b"\n\n" for name, data in events)
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.write(body)

    return behaviour


@pytest.mark.parametrize("after_content", [False, True], ids=["before-content", "after-content"])
@pytest.mark.parametrize("kind", ["openai", "openai-chat", "anthropic", "gemini"])
def test_credentials_echoed_inside_a_stream_are_redacted(gw: RunningGateway, hostile: HostileUpstream, kind: str,
                                                         after_content: bool,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    for prefix in ("p", "s"):
        hostile.reset(_stream_with_echo(kind, after_content))
        with caplog.at_level(logging.INFO):
            resp = post(gw, f"{prefix}-{kind}", stream=True)
        echoed = " ".join(hostile.requests[0].headers.values())
        assert HEADER_SECRET in echoed or SHORT_HEADER in echoed  # the upstream did echo them back
        assert "upstream failure, you sent" in resp.text
        if after_content:
            events = sse_events(resp.text)
            assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
            assert "you sent" in events[-2]["message"] and "you sent" in events[-1]["response"]["error"]["message"]
        else:
            assert resp.status_code >= 400  # nothing had reached the client: the route failed
        assert_no_secret(resp.text)
        assert "you sent" in caplog.text  # the failure was logged...
        assert_no_secret(caplog.text)  # ...without the credentials
        caplog.clear()
