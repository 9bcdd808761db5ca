"""Route cooldowns (issue 9): a route that keeps failing is taken out of rotation, then probed back in.

Through a real gateway in front of the chaos upstream (`tests/chaos_upstream.py`), with
`routing.cooldown: {failures: 3, duration: 1}` and no retries (so one request is one failure):

- 3 consecutive failures of a route open its cooldown: the next requests skip it (trace outcome
  "cooldown", no request reaches it) and the next route serves;
- after `duration`, one request probes it (half-open): a success puts it back in rotation, a
  failure opens the cooldown again, for twice as long; while a probe is in flight, other requests
  still skip the route;
- a 429 with `Retry-After` cools the route down for exactly that long;
- what is not the route's fault (a 400: the request itself is wrong) never cools it, and a
  success in between resets the count;
- the cooldown is per route: the same provider's other routes keep serving;
- every candidate out: for failures, the one back soonest is tried anyway; for rate limits, the
  client gets a 429 with the shortest Retry-After, and no upstream is called
  (docs/routing.md, "Cooldowns").

Each test uses routes of its own (`sick.<test>`: a model the chaos upstream answers or fails as the
test says with `override`), so they share one gateway without sharing route health.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.chaos_upstream import LATE, RETRY_AFTER, ChaosUpstream, providers_yaml, upstream_timeouts
from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.sse import assert_well_formed, read_events

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
DURATION = 1.0  # routing.cooldown.duration
FAILURES = 3  # routing.cooldown.failures

ROUTING = (f"{{retries: 0, retry_backoff: 0.02, max_retry_wait: 0.5, affinity: {{enabled: false}}, "
           f"cooldown: {{enabled: true, failures: {FAILURES}, duration: {DURATION}}}}}")
# Each test's own route (`c-openai/sick.<tag>`) first, then a healthy route of the same provider.
TAGS = ("trip-whole", "trip-stream", "probe", "reprobe", "limited", "one-probe", "bad-request", "reset-count",
        "lonely", "all-limited-whole", "all-limited-stream")


def _models() -> str:
    out = []
    for tag in TAGS:
        routes = [f"{{provider: c-openai, model: sick.{tag}}}"]
        if tag.startswith("all-limited"):
            routes.append(f"{{provider: c-anthropic, model: sick.{tag}}}")
        elif tag != "lonely":
            routes.append(f"{{provider: c-openai, model: ok.{tag}}}")
        out.append(f"  cool-{tag}:\n    routes:\n" + "".join(f"      - {r}\n" for r in routes))
    return "".join(out)


@pytest.fixture(scope="module")
def chaos() -> Iterator[ChaosUpstream]:
    with ChaosUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(chaos: ChaosUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("cooldowns") / "sluice.db"
    text = (f"database: sqlite:///{db}\nmaster_key: {MASTER_KEY}\nbuiltin_catalog: false\nrouting: {ROUTING}\n"
            f"providers:\n{providers_yaml(chaos, upstream_timeouts(5, 5))}models:\n{_models()}")
    with running_gateway(text) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as client:
        yield client


@pytest.fixture(autouse=True)
def _fresh(chaos: ChaosUpstream) -> None:
    chaos.reset()


def ask(gw: RunningGateway, http: httpx.Client, tag: str, *, stream: bool = False) -> tuple[int, dict[str, Any]]:
    """(status, Response or error body) for one request to `cool-<tag>`."""
    body = {"model": f"cool-{tag}", "input": "hi", "stream": stream}
    if not stream:
        resp = http.post(f"{gw.url}/v1/responses", headers=AUTH, json=body)
        return resp.status_code, resp.json()
    with http.stream("POST", f"{gw.url}/v1/responses", headers=AUTH, json=body) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp.status_code, resp.json()
        events = read_events(resp)
    assert_well_formed(events)
    return 200, events[-1]["response"]


def outcomes(response: dict[str, Any]) -> list[tuple[str, str]]:
    """(upstream model, outcome) of each attempt."""
    return [(a["model"], a["outcome"]) for a in response["routing"]["attempts"]]


def cooling_codes(response: dict[str, Any]) -> set[str]:
    return {a["error_code"] for a in response["routing"]["attempts"] if a["outcome"] == "cooldown"}


def fail_three_times(gw: RunningGateway, http: httpx.Client, chaos: ChaosUpstream, tag: str,
                     failure: str = "fail-503", *, stream: bool = False) -> None:
    chaos.override(f"sick.{tag}", failure)
    for _ in range(FAILURES):
        status, response = ask(gw, http, tag, stream=stream)
        assert status == 200
        assert outcomes(response) == [(f"sick.{tag}", "error"), (f"ok.{tag}", "ok")]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_three_failures_in_a_row_take_the_route_out_of_rotation(gw: RunningGateway, http: httpx.Client,
                                                               chaos: ChaosUpstream, stream: bool) -> None:
    tag = f"trip-{'stream' if stream else 'whole'}"
    fail_three_times(gw, http, chaos, tag, stream=stream)
    assert chaos.count("openai", f"sick.{tag}") == FAILURES
    for _ in range(2):
        status, response = ask(gw, http, tag, stream=stream)
        assert status == 200 and response["status"] == "completed"
        assert outcomes(response) == [(f"sick.{tag}", "cooldown"), (f"ok.{tag}", "ok")]
        assert cooling_codes(response) == {"route_cooldown"}
    assert chaos.count("openai", f"sick.{tag}") == FAILURES  # skipped: nothing sent to it
    # Per route: the same provider's other route kept serving all along.
    assert chaos.count("openai", f"ok.{tag}") == FAILURES + 2


def test_after_the_cooldown_a_probe_brings_the_route_back(gw: RunningGateway, http: httpx.Client,
                                                          chaos: ChaosUpstream) -> None:
    fail_three_times(gw, http, chaos, "probe")
    opened = time.monotonic()
    chaos.override("sick.probe", None)  # healed, but the gateway cannot know before it tries
    assert outcomes(ask(gw, http, "probe")[1]) == [("sick.probe", "cooldown"), ("ok.probe", "ok")]
    time.sleep(max(0.0, opened + DURATION + 0.1 - time.monotonic()))
    _, response = ask(gw, http, "probe")
    assert outcomes(response) == [("sick.probe", "ok")]  # the half-open probe, served
    assert outcomes(ask(gw, http, "probe")[1]) == [("sick.probe", "ok")]  # back in rotation
    assert chaos.count("openai", "sick.probe") == FAILURES + 2


def test_a_failed_probe_cools_the_route_down_again_for_longer(gw: RunningGateway, http: httpx.Client,
                                                             chaos: ChaosUpstream) -> None:
    fail_three_times(gw, http, chaos, "reprobe")
    time.sleep(DURATION + 0.1)
    assert outcomes(ask(gw, http, "reprobe")[1]) == [("sick.reprobe", "error"), ("ok.reprobe", "ok")]  # the probe
    reopened = time.monotonic()
    assert outcomes(ask(gw, http, "reprobe")[1]) == [("sick.reprobe", "cooldown"), ("ok.reprobe", "ok")]
    # Twice the duration this time: still cooling after one duration.
    time.sleep(max(0.0, reopened + DURATION + 0.1 - time.monotonic()))
    assert outcomes(ask(gw, http, "reprobe")[1]) == [("sick.reprobe", "cooldown"), ("ok.reprobe", "ok")]
    time.sleep(max(0.0, reopened + 2 * DURATION + 0.1 - time.monotonic()))
    chaos.override("sick.reprobe", None)
    assert outcomes(ask(gw, http, "reprobe")[1]) == [("sick.reprobe", "ok")]
    assert chaos.count("openai", "sick.reprobe") == FAILURES + 2


def test_a_429_cools_the_route_down_for_its_retry_after(gw: RunningGateway, http: httpx.Client,
                                                       chaos: ChaosUpstream) -> None:
    """One 429 is enough: the provider said when to come back (Retry-After: 1)."""
    chaos.override("sick.limited", "fail-429")
    _, response = ask(gw, http, "limited")
    limited = time.monotonic()
    assert outcomes(response) == [("sick.limited", "error"), ("ok.limited", "ok")]
    assert response["routing"]["attempts"][0]["status"] == 429
    _, response = ask(gw, http, "limited", stream=True)
    assert outcomes(response) == [("sick.limited", "cooldown"), ("ok.limited", "ok")]
    assert cooling_codes(response) == {"rate_limit_exceeded"}
    assert chaos.count("openai", "sick.limited") == 1
    chaos.override("sick.limited", None)
    time.sleep(max(0.0, limited + RETRY_AFTER + 0.1 - time.monotonic()))
    assert outcomes(ask(gw, http, "limited")[1]) == [("sick.limited", "ok")]


def test_one_probe_at_a_time(gw: RunningGateway, http: httpx.Client, chaos: ChaosUpstream) -> None:
    """While the half-open probe is in flight (a slow but healthy answer), other requests skip the route."""
    fail_three_times(gw, http, chaos, "one-probe")
    time.sleep(DURATION + 0.1)
    chaos.override("sick.one-probe", "late")  # answers after LATE seconds
    with ThreadPoolExecutor(1) as pool:
        probe = pool.submit(ask, gw, http, "one-probe")
        assert chaos.wait_for(lambda c: c.count("openai", "sick.one-probe") == FAILURES + 1, LATE)
        during = ask(gw, http, "one-probe")[1]
        probed = probe.result(timeout=10)[1]
    assert outcomes(probed) == [("sick.one-probe", "ok")]
    assert outcomes(during) == [("sick.one-probe", "cooldown"), ("ok.one-probe", "ok")]
    assert chaos.count("openai", "sick.one-probe") == FAILURES + 1


def test_a_bad_request_is_not_the_routes_fault(gw: RunningGateway, http: httpx.Client, chaos: ChaosUpstream) -> None:
    chaos.override("sick.bad-request", "fail-400")
    for _ in range(FAILURES + 1):
        status, body = ask(gw, http, "bad-request")
        assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert chaos.count("openai", "sick.bad-request") == FAILURES + 1  # tried every time, never cooled


def test_a_success_resets_the_count(gw: RunningGateway, http: httpx.Client, chaos: ChaosUpstream) -> None:
    chaos.override("sick.reset-count", "fail-503")
    for _ in range(FAILURES - 1):
        assert outcomes(ask(gw, http, "reset-count")[1])[0] == ("sick.reset-count", "error")
    chaos.override("sick.reset-count", None)
    assert outcomes(ask(gw, http, "reset-count")[1]) == [("sick.reset-count", "ok")]
    chaos.override("sick.reset-count", "fail-503")
    for _ in range(FAILURES - 1):
        assert outcomes(ask(gw, http, "reset-count")[1])[0] == ("sick.reset-count", "error")
    # Two failures since the success: still in rotation.
    assert outcomes(ask(gw, http, "reset-count")[1])[0] == ("sick.reset-count", "error")


def test_when_every_route_is_out_for_failures_the_soonest_back_is_tried(gw: RunningGateway, http: httpx.Client,
                                                                         chaos: ChaosUpstream) -> None:
    """Rather than refusing the request, the route that comes back soonest (here the only one) is
    tried anyway: it has healed, so the client is served."""
    chaos.override("sick.lonely", "fail-503")
    for _ in range(FAILURES):
        status, _ = ask(gw, http, "lonely")
        assert status == 424
    chaos.override("sick.lonely", None)
    started = time.monotonic()
    status, response = ask(gw, http, "lonely")
    assert time.monotonic() - started < 1
    assert status == 200, response
    assert outcomes(response)[-1] == ("sick.lonely", "ok")
    assert chaos.count("openai", "sick.lonely") == FAILURES + 1


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_when_every_route_is_rate_limited_the_client_gets_429_at_once(gw: RunningGateway, http: httpx.Client,
                                                                     chaos: ChaosUpstream, stream: bool) -> None:
    """Every candidate out for a rate limit: a 429 with the shortest Retry-After, no upstream call."""
    tag = f"all-limited-{'stream' if stream else 'whole'}"
    body = {"model": f"cool-{tag}", "input": "hi", "stream": stream}
    chaos.override(f"sick.{tag}", "fail-429")
    first = http.post(f"{gw.url}/v1/responses", headers=AUTH, json=body)
    assert first.status_code == 429 and int(first.headers["retry-after"]) >= 1
    assert chaos.routes() == [("openai", f"sick.{tag}"), ("anthropic", f"sick.{tag}")]
    again = http.post(f"{gw.url}/v1/responses", headers=AUTH, json=body)
    assert again.status_code == 429, again.text
    assert 1 <= int(again.headers["retry-after"]) <= RETRY_AFTER
    assert len(chaos.routes()) == 2  # nothing sent: both routes are cooling down
