"""Exhaustion limits: slow and idle clients, oversized headers, connection cap, JSON shape.

The slow-client tests run a real gateway with deadlines of ~1 s and talk raw HTTP/1.1 over a
socket, since no HTTP client library can be made to drip headers. Each asserts both the answer
and that the server, not the client, ends the connection.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import openai
import pytest

from sluice.canonical.limits import check_input_counts, check_json_shape
from sluice.config import ServerConfig, parse_config
from sluice.errors import InvalidRequest, PayloadTooLarge
from sluice.http.server import auto_max_connections, resolve_limits
from tests.conftest import MASTER_KEY, RunningGateway, _free_port, running_gateway, wait_for_health

LIMITED = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
server:
  idle_timeout: 0.5
  keepalive_timeout: 0.5
  header_timeout: 1
  body_timeout: 1
  max_header_bytes: 8192
  max_body_bytes: 300000
  max_connections: {max_connections}
  max_input_items: 50
  max_content_parts: 100
"""

AUTH = f"authorization: Bearer {MASTER_KEY}\r\n"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("limits") / "sluice.db"
    with running_gateway(LIMITED.format(db=db, master=MASTER_KEY, max_connections=64)) as running:
        yield running


def _connect(gateway: RunningGateway) -> socket.socket:
    host, port = gateway.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until_closed(sock: socket.socket, *, within: float, drip: bytes = b"", every: float = 0.2) -> bytes:
    """Everything the server sends until it closes, sending `drip` every `every` s meanwhile.

    Fails if the server has not closed the connection after `within` seconds.
    """
    received = b""
    deadline = time.monotonic() + within
    next_drip = time.monotonic() + every
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, min(next_drip, deadline) - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if drip:
                try:
                    sock.sendall(drip)
                except OSError:  # the server closed its side completely
                    return received
            next_drip = time.monotonic() + every
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    pytest.fail(f"the server kept the connection open for {within} s; received {received[:200]!r}")


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _error(response: bytes) -> dict[str, object]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    error = msgspec.json.decode(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# --- slow and idle clients -------------------------------------------------------------------


def test_idle_connection_is_closed(limited: RunningGateway) -> None:
    with _connect(limited) as sock:
        started = time.monotonic()
        assert _read_until_closed(sock, within=4) == b""
        assert time.monotonic() - started >= 0.4


def test_dripped_headers_get_408(limited: RunningGateway) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\n")
        started = time.monotonic()
        response = _read_until_closed(sock, within=5, drip=b"x-drip: 1\r\n")
        assert time.monotonic() - started < 3
    assert _status(response) == 408
    assert _error(response)["code"] == "request_timeout"
    assert b"connection: close" in response.lower()


def test_headers_stopped_midway_get_408(limited: RunningGateway) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-half")
        response = _read_until_closed(sock, within=5)
    assert _status(response) == 408


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_dripped_body_gets_408(limited: RunningGateway, chunked: bool) -> None:
    framing = "transfer-encoding: chunked\r\n" if chunked else "content-length: 1000\r\n"
    with _connect(limited) as sock:
        sock.sendall(f"POST /v1/responses HTTP/1.1\r\nhost: x\r\n{AUTH}content-type: application/json\r\n"
                     f"{framing}\r\n".encode())
        sock.sendall(b"1\r\n{\r\n" if chunked else b"{")
        started = time.monotonic()
        response = _read_until_closed(sock, within=5, drip=b"1\r\n \r\n" if chunked else b" ")
        assert time.monotonic() - started < 3
    assert _status(response) == 408
    assert _error(response)["code"] == "request_timeout"


def test_oversized_headers_get_431(limited: RunningGateway) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20000 + b"\r\n\r\n")
        response = _read_until_closed(sock, within=3)
    assert _status(response) == 431
    assert _error(response)["code"] == "request_header_fields_too_large"


def test_headers_over_the_cap_in_small_pieces_get_431(limited: RunningGateway) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        for i in range(20):  # 20 x 600 bytes, each in its own packet
            sock.sendall(b"x-h%d: %s\r\n" % (i, b"a" * 600))
            time.sleep(0.005)
        response = _read_until_closed(sock, within=3)
    assert _status(response) == 431


def test_big_body_after_small_headers_is_not_431(limited: RunningGateway) -> None:
    # Headers and a 200 KB body in one write: only the headers count against max_header_bytes.
    body = msgspec.json.encode({"model": "no-such-model", "input": "x" * 200_000})
    with _connect(limited) as sock:
        sock.sendall(f"POST /v1/responses HTTP/1.1\r\nhost: x\r\n{AUTH}content-type: application/json\r\n"
                     f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        response = _read_until_closed(sock, within=5)
    assert _status(response) == 404


def test_chunked_body_over_the_limit_is_413_then_closed(limited: RunningGateway) -> None:
    chunk = b"%x\r\n%s\r\n" % (100_000, b" " * 100_000)
    with _connect(limited) as sock:
        sock.sendall(f"POST /v1/responses HTTP/1.1\r\nhost: x\r\n{AUTH}content-type: application/json\r\n"
                     "transfer-encoding: chunked\r\n\r\n".encode() + chunk * 4)
        # The client keeps sending: the server must still end the connection.
        response = _read_until_closed(sock, within=4, drip=chunk, every=0.05)
    assert _status(response) == 413
    assert b"connection: close" in response.lower()


def test_early_error_closes_a_connection_whose_body_is_pending(limited: RunningGateway) -> None:
    # 401 before the body: the body that never comes must not hold the connection.
    with _connect(limited) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 5000\r\n\r\n{")
        started = time.monotonic()
        response = _read_until_closed(sock, within=4)
        assert time.monotonic() - started < 2.5
    assert _status(response) == 401
    assert b"connection: close" in response.lower()


def test_keep_alive_still_works(limited: RunningGateway) -> None:
    with httpx.Client(base_url=limited.url, timeout=5) as http:
        first = http.post("/v1/responses", json={"model": "nope", "input": "x"},
                          headers={"authorization": f"Bearer {MASTER_KEY}"})
        second = http.get("/health")
        assert first.status_code == 404 and second.status_code == 200
        assert first.headers.get("connection") != "close" and second.headers.get("connection") != "close"
    with _connect(limited) as sock:  # two requests on one socket, then closed when idle
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\nGET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        response = _read_until_closed(sock, within=4)
    assert response.count(b"HTTP/1.1 200") == 2


def test_connections_over_the_cap_get_503(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = LIMITED.format(db=tmp_path / "sluice.db", master=MASTER_KEY, max_connections=4)
    with running_gateway(config) as gateway:
        idle = [_connect(gateway) for _ in range(4)]
        time.sleep(0.1)
        with _connect(gateway) as sock:
            response = _read_until_closed(sock, within=3)
        assert _status(response) == 503
        assert _error(response)["code"] == "too_many_connections"
        assert b"retry-after: 1" in response.lower()
        assert any("over max_connections (4 per worker)" in r.getMessage() for r in caplog.records)
        for sock in idle:  # the idle ones are closed by idle_timeout, freeing their places
            assert _read_until_closed(sock, within=4) == b""
            sock.close()
        time.sleep(0.1)
        assert httpx.get(f"{gateway.url}/health", timeout=5).status_code == 200


def test_serve_raises_the_descriptor_limit(tmp_path: Path) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text(f"database: sqlite:///{tmp_path / 'sluice.db'}\nbuiltin_catalog: false\n")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("needs a finite hard descriptor limit above 256")
    port = _free_port()

    def lower_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    proc = subprocess.Popen([sys.executable, "-m", "sluice", "serve", "--config", str(config), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=lower_soft_limit,
                            start_new_session=True)
    try:
        wait_for_health(port, proc)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


# --- JSON shape ------------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("depth", [100, 1000, 100_000])
def test_deeply_nested_json_is_400(client: openai.OpenAI, gateway: RunningGateway, depth: int) -> None:
    body = b'{"model":"gpt-5.2","input":"hi","text":{"format":{"type":"json_schema","name":"x","schema":' + \
        _nested(depth) + b"}}}"
    resp = httpx.post(f"{gateway.url}/v1/responses", content=body, timeout=10,
                      headers={"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "json_too_deep"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-5.2", input="hi",
                                tools=[{"type": "function", "name": "f", "parameters": msgspec.json.decode(
                                    _nested(min(depth, 500)))}])


def test_dense_json_is_413_within_the_body_limit(gateway: RunningGateway) -> None:
    body = b'{"model":"nope","input":[{"role":"user","content":"hi","x":[' + b",".join([b"{}"] * 700_000) + b"]}]}"
    resp = httpx.post(f"{gateway.url}/v1/responses", content=body, timeout=10,
                      headers={"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "json_too_complex"


def test_brackets_and_commas_inside_strings_do_not_count(gateway: RunningGateway) -> None:
    # 2 MB of JSON-like text inside strings, and a prompt of 300 "[": not structure.
    text = '{"id": [1, 2, {"a": "b"}], "x": "y"},' * 60_000
    body = msgspec.json.encode({"model": "no-such-model", "instructions": "[" * 300,
                                "input": [{"type": "function_call_output", "call_id": "c", "output": text}]})
    assert len(body) > 2_000_000
    resp = httpx.post(f"{gateway.url}/v1/responses", content=body, timeout=10,
                      headers={"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"})
    assert resp.status_code == 404, resp.text  # parsed, then refused for its unknown model


def test_too_many_input_items_is_400(limited: RunningGateway) -> None:
    sdk = openai.OpenAI(base_url=f"{limited.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=10)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="nope", input=[{"role": "user", "content": "hi"}] * 51)
    assert caught.value.code == "array_above_max_length"
    assert caught.value.param == "input"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="nope", input=[
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}] * 60}] * 2)
    assert caught.value.code == "array_above_max_length"
    with pytest.raises(openai.NotFoundError):  # within the limits: parsed, unknown model
        sdk.responses.create(model="nope", input=[{"role": "user", "content": "hi"}] * 50)


# --- units -----------------------------------------------------------------------------------


def test_check_json_shape_units() -> None:
    limits = ServerConfig(max_json_depth=3)
    check_json_shape(b'{"a":[{"b":1}]}', limits)  # depth 3
    with pytest.raises(InvalidRequest):
        check_json_shape(b'{"a":[{"b":[]}]}', limits)
    check_json_shape(b'{"a":"[[[[[[", "b":"]]]]"}', limits)  # brackets in strings
    check_json_shape(b'{"a":"\\"[[[[[[\\\\", "b":[1]}', limits)  # escaped quote and backslash
    with pytest.raises(InvalidRequest):
        check_json_shape(b'{"a":"\\\\", "b":[[[[]]]]}', limits)  # `\\"` ends the string
    big = b'{"a":[' + b",".join([b"[1]"] * 400_000) + b"]}"
    with pytest.raises(PayloadTooLarge):
        check_json_shape(big)
    check_json_shape(big, ServerConfig(max_json_expansion=100))
    check_json_shape(msgspec.json.encode({"a": "x" * 3_000_000}))
    check_json_shape(b'{"a":"' + b"[1,{}]," * 500_000 + b'"}')  # in a string, no escapes
    check_json_shape(msgspec.json.encode({"a": '{"b":[1,{}]},' * 300_000}))  # in a string, escaped
    with pytest.raises(InvalidRequest):
        check_json_shape(b'{"a":"' + b"x" * 2_000_000 + b'","b":' + b"[" * 100 + b"]" * 100 + b"}")  # > 1 MiB


def test_check_input_counts_units() -> None:
    limits = ServerConfig(max_input_items=2, max_content_parts=3)
    check_input_counts("text", limits)
    check_input_counts([{"content": [1, 2]}, {"output": [3]}], limits)
    with pytest.raises(InvalidRequest):
        check_input_counts([{}, {}, {}], limits)
    with pytest.raises(InvalidRequest) as caught:
        check_input_counts([{"content": [1, 2]}, {"output": [3, 4]}], limits)
    assert caught.value.param == "input[1]"


def test_limits_config() -> None:
    config = parse_config("server: {header_timeout: 2.5, max_connections: 10}")
    limits = resolve_limits(config.server)
    assert limits.header_timeout == 2.5 and limits.max_connections == 10
    assert resolve_limits(ServerConfig()).max_connections == auto_max_connections() >= 16
    with pytest.raises(Exception, match="body_timeout"):
        parse_config("server: {body_timeout: 0}")
