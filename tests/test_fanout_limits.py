"""One request cannot fan out without bound: a capped fallback list and a cap on upstream calls."""

from __future__ import annotations

import httpx

from tests.conftest import MASTER_KEY, RunningGateway
from tests.replay.recordings import Exchange
from tests.replay.server import ReplayServer

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
BUSY = Exchange(method="POST", path="/", request_body=None, status=503, headers={"content-type": "application/json"},
                body=b'{"error": {"message": "busy"}}', stream=False, source="synthetic")


def test_a_long_fallback_list_is_refused_before_any_upstream_call(gateway: RunningGateway,
                                                                   upstream: ReplayServer) -> None:
    fallbacks = [f"replay-chat/model-{i}" for i in range(5000)]
    resp = httpx.post(f"{gateway.url}/v1/responses", headers=AUTH, timeout=20,
                      json={"model": "chat", "input": "hi", "routing": {"model": {"fallbacks": fallbacks}}})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "routing.model.fallbacks"
    assert "at most 16" in resp.json()["error"]["message"]
    assert upstream.requests == []


def test_upstream_calls_per_request_are_capped(gateway: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue([BUSY] * 20)
    fallbacks = [f"replay-chat/model-{i}" for i in range(16)]  # 17 distinct routes, all failing
    resp = httpx.post(f"{gateway.url}/v1/responses", headers=AUTH, timeout=20,
                      json={"model": "chat", "input": "hi", "routing": {"model": {"fallbacks": fallbacks}}})
    assert resp.status_code == 424
    assert len(upstream.requests) == 8  # routing.max_attempts
