"""Malformed requests that once got through (or crashed): each is a 400 naming its param.

Deeply nested JSON is covered in tests/test_limits.py.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import MASTER_KEY, RunningGateway
from tests.replay.server import ReplayServer

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def post(gateway: RunningGateway, body: dict) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/responses", headers=AUTH, json=body, timeout=20)


@pytest.mark.parametrize(("body", "param"), [
    ({"input": [{"role": "user", "content": [{"type": "input_txt", "text": "hi"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": "hi"}, {"type": "function_cal", "call_id": "c", "name": "f",
                                                      "arguments": "{}"}]}, "input[1].type"),
    ({"input": "hi", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_wether"}},
     "tool_choice.name"),
    ({"input": "hi", "tool_choice": {"type": "function", "name": "get_weather"}}, "tool_choice.name"),
    ({"input": [{"role": ["user"], "content": "hi"}]}, "input[0].role"),
    ({"input": "hi", "tools": [{"type": "web_search", "filters": "example.com"}]}, "tools[0].filters"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x",
                                         "schema": {"type": "object", "properties": ["a"]}}}},
     "text.format.schema.properties"),
])
def test_malformed_fields_are_named(gateway: RunningGateway, upstream: ReplayServer, body: dict,
                                    param: str) -> None:
    resp = post(gateway, {"model": "chat", **body})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
    assert upstream.requests == []
