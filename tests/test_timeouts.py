"""Upstream timeouts (docs/routing.md, "Timeouts"): `connect`, `first_byte`, `idle`, `total` per provider
and per route, and the request's deadline cutting an attempt — or a stream — still in flight.

A local Chat Completions upstream misbehaves on purpose, chosen by the upstream model id a route
sends: it never answers, sends headers and then nothing, stalls after some content, trickles
forever, or answers late. Timeouts are fractions of a second so the tests stay fast; the bounds on
how long a request took are generous (the point is that nothing hangs, not how fast it fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from sluice.config import DEFAULT_TIMEOUTS, ConfigError, ProviderConfig, Timeouts, parse_config
from sluice.providers.transport import ATTEMPT_LIMITS, AttemptLimits, UpstreamClient, UpstreamTimeout
from sluice.routing.catalog import build_catalog
from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.sse import assert_well_formed, read_events

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
TRICKLE_EVERY = 0.1


# --- the upstream ----------------------------------------------------------------------------------


class _Gone(Exception):
    """The gateway closed the connection."""


class SlowUpstream:
    """A Chat Completions server whose behaviour is the request's model id (`kind` or `kind:seconds`).

    - `ok`: a normal answer (streamed or not);
    - `hang`: reads the request, never answers;
    - `headers`: sends 200 headers, then nothing;
    - `stall`: streamed, one text chunk then nothing; not streamed, half the JSON body then nothing;
    - `trickle`: streamed, a text chunk every 0.1 s, forever;
    - `slow:S`: answers after S seconds;
    - `pieces:S`: a whole JSON answer sent in three pieces, S seconds apart.

    It records every request's model id (`models`) and which ones the gateway hung up on (`gone`).
    """

    def __init__(self) -> None:
        self.models: list[str] = []
        self.gone: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        handler = type("_Bound", (_Handler,), {"upstream": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> SlowUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.models.clear()
            self.gone.clear()

    def wait_gone(self, model: str, timeout: float = 5.0) -> bool:
        """Until the gateway has closed its connection for a request of `model`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if model in self.gone:
                    return True
            time.sleep(0.01)
        return False


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _answer(model: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-t", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"Hello from {model}"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: SlowUpstream
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        model, streamed = request["model"], bool(request.get("stream"))
        with self.upstream.lock:
            self.upstream.models.append(model)
        kind, _, arg = model.partition(":")
        try:
            getattr(self, "_" + kind)(model, streamed, float(arg or 0))
        except (_Gone, OSError):
            self.close_connection = True
            with self.upstream.lock:
                self.upstream.gone.append(model)

    # -- behaviours --

    def _ok(self, model: str, streamed: bool, _: float) -> None:
        if not streamed:
            self._json(_answer(model))
            return
        self._stream_head()
        self._send(_chunk({"role": "assistant", "content": ""}))
        self._send(_chunk({"content": f"Hello from {model}"}))
        self._send(_chunk({}, "stop"))
        self._send(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _hang(self, model: str, streamed: bool, _: float) -> None:
        self._wait(30)

    def _headers(self, model: str, streamed: bool, _: float) -> None:
        if streamed:
            self._stream_head()
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
        self.wfile.flush()
        self._wait(30)

    def _stall(self, model: str, streamed: bool, _: float) -> None:
        if streamed:
            self._stream_head()
            self._send(_chunk({"role": "assistant", "content": ""}))
            self._send(_chunk({"content": "Hello"}))
        else:
            body = _answer(model)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
        self._wait(30)

    def _trickle(self, model: str, streamed: bool, _: float) -> None:
        self._stream_head()
        self._send(_chunk({"role": "assistant", "content": ""}))
        for _ in range(int(30 / TRICKLE_EVERY)):
            self._send(_chunk({"content": "."}))
            self._wait(TRICKLE_EVERY)

    def _slow(self, model: str, streamed: bool, seconds: float) -> None:
        self._wait(seconds)
        self._ok(model, streamed, 0)

    def _pieces(self, model: str, streamed: bool, gap: float) -> None:
        body = _answer(model)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        third = len(body) // 3
        for piece in (body[:third], body[third: 2 * third], body[2 * third:]):
            self.wfile.write(piece)
            self.wfile.flush()
            if piece is not body[2 * third:]:
                self._wait(gap)

    # -- helpers --

    def _json(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream_head(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _send(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _wait(self, seconds: float) -> None:
        """Sleep, but notice the gateway hanging up (raises `_Gone`) or the server stopping."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.upstream.stopping.is_set():
                raise _Gone
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.01))
            if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                raise _Gone


# --- gateways --------------------------------------------------------------------------------------

CONFIG = """
database: sqlite:///{db}
master_key: {master}
builtin_catalog: false
routing: {{retries: 0, deadline: {deadline}}}
providers:
  p-quick:   # tight timeouts
    type: openai-chat
    base_url: {upstream}/v1
    api_key: sk-upstream-quick-0000
    timeouts: {{first_byte: 0.5, idle: 0.5}}
  p-patient: # the defaults
    type: openai-chat
    base_url: {upstream}/v1
    api_key: sk-upstream-patient-0000
  p-legacy:  # the older key: `timeout` bounds the first byte and the gaps
    type: openai-chat
    base_url: {upstream}/v1
    api_key: sk-upstream-legacy-0000
    timeout: 0.5
models:
{models}
"""


def _models(**models: list[str]) -> str:
    """`name=["provider/model {timeouts...}", ...]` as the config's models section."""
    lines = []
    for name, routes in models.items():
        lines.append(f"  {name.replace('_', '-')}:\n    routes:")
        for route in routes:
            target, _, extra = route.partition(" ")
            provider, model = target.split("/", 1)
            timeouts = f", timeouts: {extra}" if extra else ""
            lines.append(f"      - {{provider: {provider}, model: '{model}'{timeouts}}}")
    return "\n".join(lines)


MODELS = _models(
    hang_then_ok=["p-quick/hang", "p-patient/ok"],
    headers_then_ok=["p-quick/headers", "p-patient/ok"],
    stall_then_ok=["p-quick/stall", "p-patient/ok"],
    hang_only=["p-quick/hang"],
    trickle_total=["p-quick/trickle {total: 1.2}"],
    pieces=["p-quick/pieces:0.2"],
    route_looser=["p-quick/slow:1.0 {first_byte: 5}"],
    route_tighter=["p-patient/slow:3.0 {first_byte: 0.3}", "p-patient/ok"],
    legacy_hang=["p-legacy/hang"],
)
DEADLINE_MODELS = _models(
    slow_then_ok=["p-patient/slow:5", "p-patient/ok"],
    trickle_forever=["p-patient/trickle"],
)


@pytest.fixture(scope="module")
def slow() -> Iterator[SlowUpstream]:
    with SlowUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(slow: SlowUpstream) -> None:
    slow.reset()


def _gateway(slow: SlowUpstream, tmp: Path, models: str, deadline: float) -> contextlib.AbstractContextManager[
        RunningGateway]:
    return running_gateway(CONFIG.format(db=tmp / "sluice.db", master=MASTER_KEY, upstream=slow.url,
                                         deadline=deadline, models=models))


@pytest.fixture(scope="module")
def gw(slow: SlowUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with _gateway(slow, tmp_path_factory.mktemp("timeouts"), MODELS, 60) as running:
        yield running


@pytest.fixture(scope="module")
def deadline_gw(slow: SlowUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with _gateway(slow, tmp_path_factory.mktemp("deadline"), DEADLINE_MODELS, 1.0) as running:
        yield running


def _client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)


def _trace(response: Any) -> list[tuple[str, str, str, int | None, str | None]]:
    attempts = response.model_extra["routing"]["attempts"] if hasattr(response, "model_extra") \
        else response["routing"]["attempts"]
    return [(a["provider"], a["model"], a["outcome"], a["status"], a["error_code"]) for a in attempts]


def _stream(gw: RunningGateway, model: str) -> tuple[list[dict[str, Any]], float]:
    started = time.monotonic()
    with httpx.stream("POST", f"{gw.url}/v1/responses", headers=AUTH, timeout=20,
                      json={"model": model, "input": "hi", "stream": True}) as resp:
        assert resp.status_code == 200
        events = read_events(resp)
    return events, time.monotonic() - started


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


# --- first_byte: (a) no answer at all, (b) headers and then nothing --------------------------------


@pytest.mark.parametrize("model", ["hang-then-ok", "headers-then-ok"])
def test_first_byte_fails_over_to_the_next_route(gw: RunningGateway, slow: SlowUpstream, model: str) -> None:
    behaviour = model.split("-")[0]
    started = time.monotonic()
    response = _client(gw).responses.create(model=model, input="hi")
    assert time.monotonic() - started < 10
    assert response.output_text == "Hello from ok"
    assert _trace(response) == [("p-quick", behaviour, "error", 504, "upstream_timeout"),
                                ("p-patient", "ok", "ok", 200, None)]
    first = response.model_extra["routing"]["attempts"][0]
    assert 450 <= first["latency_ms"] < 5000  # cut at first_byte (0.5 s), not earlier
    assert slow.wait_gone(behaviour), "the timed-out connection must be closed"


@pytest.mark.parametrize("model", ["hang-then-ok", "headers-then-ok"])
def test_first_byte_before_a_stream_fails_over_invisibly(gw: RunningGateway, slow: SlowUpstream,
                                                         model: str) -> None:
    events, took = _stream(gw, model)
    assert took < 10
    assert_well_formed(events)
    assert events[-1]["type"] == "response.completed"
    assert not [e for e in events if e["type"] == "error"]
    assert _text(events) == "Hello from ok"
    assert _trace(events[-1]["response"])[0][2:] == ("error", 504, "upstream_timeout")


def test_the_error_names_the_timeout_and_its_value(gw: RunningGateway) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        _client(gw).responses.create(model="hang-only", input="hi")
    error = caught.value.body
    assert isinstance(error, dict)
    assert "provider 'p-quick': no first byte within 0.5 s (timeouts.first_byte)" in error["message"]
    assert "sk-upstream" not in json.dumps(error)
    assert caught.value.status_code in (424, 504)


def test_the_older_timeout_key_still_bounds_the_wait(gw: RunningGateway) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        _client(gw).responses.create(model="legacy-hang", input="hi")
    assert "no first byte within 0.5 s (timeouts.first_byte)" in str(caught.value)


# --- idle: (c) content, then silence ----------------------------------------------------------------


def test_idle_ends_a_stalled_stream_with_a_timeout(gw: RunningGateway, slow: SlowUpstream) -> None:
    events, took = _stream(gw, "stall-then-ok")
    assert took < 10
    assert_well_formed(events)
    assert _text(events) == "Hello"  # committed to this route: no failover after content
    error, failed = events[-2], events[-1]
    assert error["type"] == "error" and failed["type"] == "response.failed"
    assert error["code"] == "upstream_timeout"
    assert "no data for 0.5 s (timeouts.idle)" in error["message"]
    assert "timeouts.idle" in failed["response"]["error"]["message"]
    assert _trace(failed["response"]) == [("p-quick", "stall", "error", 504, "upstream_timeout")]
    assert slow.wait_gone("stall")


def test_idle_bounds_the_pieces_of_a_whole_answer(gw: RunningGateway, slow: SlowUpstream) -> None:
    # Half a JSON body, then silence: the route fails (nothing reached the client yet), the next serves.
    response = _client(gw).responses.create(model="stall-then-ok", input="hi")
    assert response.output_text == "Hello from ok"
    assert _trace(response)[0] == ("p-quick", "stall", "error", 504, "upstream_timeout")
    # Pieces 0.2 s apart are within idle (0.5 s), although the whole answer takes longer than that.
    response = _client(gw).responses.create(model="pieces", input="hi")
    assert response.output_text == "Hello from pieces:0.2"


# --- total: (d) a stream that never stops --------------------------------------------------------


def test_total_ends_a_stream_that_trickles_forever(gw: RunningGateway, slow: SlowUpstream) -> None:
    events, took = _stream(gw, "trickle-total")
    assert 1.0 < took < 10
    assert_well_formed(events)
    assert len(_text(events)) >= 3  # chunks kept coming well within idle (0.5 s)
    error = events[-2]
    assert error["type"] == "error" and error["code"] == "upstream_timeout"
    assert "the answer did not end within 1.2 s (timeouts.total)" in error["message"]
    assert events[-1]["type"] == "response.failed"
    assert slow.wait_gone("trickle")


# --- (e) a route's timeouts override its provider's ---------------------------------------------------


def test_a_route_may_wait_longer_than_its_provider(gw: RunningGateway) -> None:
    # p-quick's first_byte is 0.5 s; this route's 5 s lets a 1 s answer through.
    response = _client(gw).responses.create(model="route-looser", input="hi")
    assert response.output_text == "Hello from slow:1.0"


def test_a_route_may_wait_less_than_its_provider(gw: RunningGateway, slow: SlowUpstream) -> None:
    # p-patient waits 300 s by default; this route gives up after 0.3 s.
    response = _client(gw).responses.create(model="route-tighter", input="hi")
    assert response.output_text == "Hello from ok"
    assert _trace(response)[0] == ("p-patient", "slow:3.0", "error", 504, "upstream_timeout")
    assert slow.wait_gone("slow:3.0")


# --- (f) the request's deadline -------------------------------------------------------------------


def test_the_deadline_cuts_an_attempt_and_starts_no_other(deadline_gw: RunningGateway, slow: SlowUpstream) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        _client(deadline_gw).responses.create(model="slow-then-ok", input="hi")
    assert time.monotonic() - started < 4  # the upstream would have answered after 5 s
    assert "routing.deadline" in str(caught.value)
    assert slow.wait_gone("slow:5")
    assert slow.models == ["slow:5"]  # the second route was never tried


def test_the_deadline_cuts_a_stream_being_read(deadline_gw: RunningGateway, slow: SlowUpstream) -> None:
    events, took = _stream(deadline_gw, "trickle-forever")
    assert took < 5
    assert_well_formed(events)
    assert _text(events)
    error = events[-2]
    assert error["type"] == "error" and error["code"] == "upstream_timeout"
    assert "routing.deadline" in error["message"]
    assert slow.wait_gone("trickle")


# --- (g) connect ---------------------------------------------------------------------------------


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose connections are never accepted: its backlog is full, so a new SYN goes unanswered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    try:
        for _ in range(4):  # whatever the kernel's slack on a backlog of 0
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.05)
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", port))
        except TimeoutError:
            pass
        else:
            pytest.skip("this kernel accepts connections past a full backlog")
        finally:
            probe.close()
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_connect_timeout(unanswered_port: int) -> None:
    config = ProviderConfig(type="openai-chat", timeouts=Timeouts(connect=0.3, first_byte=5))

    async def call() -> None:
        client = UpstreamClient(config)
        try:
            await client.post(f"http://127.0.0.1:{unanswered_port}/v1/chat/completions", b"{}", {})
        finally:
            await client.close()

    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        asyncio.run(call())
    assert 0.25 < time.monotonic() - started < 5
    assert caught.value.setting == "timeouts.connect"
    assert str(caught.value) == "no connection within 0.3 s (timeouts.connect)"


# --- the transport on its own ----------------------------------------------------------------------


def test_the_transport_reads_the_attempt_limits_when_the_request_goes_out(slow: SlowUpstream) -> None:
    """A route's timeouts and the deadline come from ATTEMPT_LIMITS; without them, the provider's own."""
    url = f"{slow.url}/v1/chat/completions"

    async def call(model: str, limits: AttemptLimits | None) -> str:
        client = UpstreamClient(ProviderConfig(type="openai-chat", timeouts=Timeouts(first_byte=0.3)))
        ATTEMPT_LIMITS.set(limits)
        try:
            response = await client.post(url, json.dumps({"model": model}).encode(), {})
            try:
                return (await response.read()).decode()
            finally:
                await response.aclose()
        except UpstreamTimeout as exc:
            return exc.setting
        finally:
            await client.close()

    assert asyncio.run(call("slow:0.6", None)) == "timeouts.first_byte"
    route = Timeouts(first_byte=2.0).over(DEFAULT_TIMEOUTS)
    assert "Hello from slow:0.6" in asyncio.run(call("slow:0.6", AttemptLimits(route, time.monotonic() + 60, 60)))
    assert asyncio.run(call("slow:0.6", AttemptLimits(route, time.monotonic() + 0.3, 9))) == "routing.deadline"
    tight = Timeouts(total=0.3).over(route)
    assert asyncio.run(call("slow:0.6", AttemptLimits(tight, time.monotonic() + 60, 60))) == "timeouts.total"


def test_concurrent_calls_on_one_client_keep_their_own_timeouts(slow: SlowUpstream) -> None:
    """The client's one watchdog: a later call due sooner moves it, and the others are still judged."""
    url = f"{slow.url}/v1/chat/completions"

    async def call(client: UpstreamClient, model: str, first_byte: float, delay: float) -> tuple[str, float]:
        await asyncio.sleep(delay)
        ATTEMPT_LIMITS.set(AttemptLimits(Timeouts(first_byte=first_byte).over(DEFAULT_TIMEOUTS),
                                         time.monotonic() + 60, 60))
        started = time.monotonic()
        try:
            response = await client.post(url, json.dumps({"model": model}).encode(), {})
            try:
                outcome = json.loads(await response.read())["model"]
            finally:
                await response.aclose()
        except UpstreamTimeout as exc:
            outcome = exc.setting
        return outcome, time.monotonic() - started

    async def run() -> list[tuple[str, float]]:
        client = UpstreamClient(ProviderConfig(type="openai-chat"))
        try:
            return list(await asyncio.gather(
                call(client, "slow:0.8", 5, 0),  # registered first, due last: answers in time
                call(client, "hang", 0.3, 0.05),  # due sooner than the first: the watchdog moves
                call(client, "hang", 0.6, 0.1),  # due between the two: judged after the first wake
            ))
        finally:
            await client.close()

    (patient, patient_took), (short, short_took), (middle, middle_took) = asyncio.run(run())
    assert patient == "slow:0.8" and patient_took >= 0.75
    assert short == "timeouts.first_byte" and 0.28 <= short_took < 3  # not at the first call's 5 s
    assert middle == "timeouts.first_byte" and 0.58 <= middle_took < 3


# --- configuration --------------------------------------------------------------------------------


def test_defaults_and_the_older_keys() -> None:
    assert ProviderConfig(type="openai").resolved_timeouts() == DEFAULT_TIMEOUTS
    assert (DEFAULT_TIMEOUTS.connect, DEFAULT_TIMEOUTS.first_byte, DEFAULT_TIMEOUTS.idle) == (10, 300, 300)
    assert DEFAULT_TIMEOUTS.total is None  # the request deadline bounds every attempt
    older = ProviderConfig(type="openai", timeout=90, connect_timeout=3).resolved_timeouts()
    assert older == Timeouts(connect=3, first_byte=90, idle=90, total=None)
    # `timeouts` wins over the older keys, field by field.
    mixed = ProviderConfig(type="openai", timeout=90, connect_timeout=3, timeouts=Timeouts(idle=20, total=900))
    assert mixed.resolved_timeouts() == Timeouts(connect=3, first_byte=90, idle=20, total=900)


def test_a_route_overrides_its_provider_field_by_field() -> None:
    config = parse_config("""
builtin_catalog: false
providers:
  p: {type: openai, base_url: "http://127.0.0.1:9/v1", connect_timeout: 4, timeouts: {first_byte: 60, idle: 30}}
models:
  m:
    routes:
      - {provider: p, model: a}
      - {provider: p, model: b, timeouts: {first_byte: 900, total: 1200}}
""")
    catalog = build_catalog(config, environ={})
    plain, slow_route = catalog.resolve("m")
    assert plain.timeouts == Timeouts(connect=4, first_byte=60, idle=30, total=None)
    assert slow_route.timeouts == Timeouts(connect=4, first_byte=900, idle=30, total=1200)
    # Resolved once, at build: every request shares the route's object.
    assert catalog.resolve("m")[0].timeouts is plain.timeouts
    # An ad-hoc `provider/model` route gets its provider's.
    assert catalog.resolve("p/anything")[0].timeouts == plain.timeouts


@pytest.mark.parametrize("bad", ["{idle: 0}", "{first_byte: -1}", "{read: 5}", "5"])
def test_invalid_timeouts_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="timeouts"):
        parse_config(f"providers:\n  p: {{type: openai, timeouts: {bad}}}\n")
    route = f"{{provider: p, model: x, timeouts: {bad}}}"
    with pytest.raises(ConfigError, match="timeouts"):
        parse_config(f"providers:\n  p: {{type: openai}}\nmodels:\n  m:\n    routes:\n      - {route}\n")


def test_the_older_keys_must_be_positive_too() -> None:
    with pytest.raises(ConfigError, match="timeout"):
        parse_config("providers:\n  p: {type: openai, timeout: 0}\n")
