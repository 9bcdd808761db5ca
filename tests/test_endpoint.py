"""The HTTP surface: validation, authentication, model names, errors in OpenAI's shape."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, RunningGateway
from tests.replay.recordings import Exchange, fixtures_root, load
from tests.replay.server import ReplayServer

FIX = fixtures_root()
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


def post(gateway: RunningGateway, body: object, headers: dict[str, str] | None = None,
         content: bytes | None = None) -> httpx.Response:
    headers = {**AUTH, **(headers or {})}
    if content is not None:
        return httpx.post(f"{gateway.url}/v1/responses", content=content, headers=headers, timeout=10)
    return httpx.post(f"{gateway.url}/v1/responses", json=body, headers=headers, timeout=10)


def assert_error(resp: httpx.Response, status: int, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "gpt-5.2"}, "input"),
        ({"model": "gpt-5.2", "input": ""}, "input"),
        ({"model": "gpt-5.2", "input": []}, "input"),
        ({"model": "gpt-5.2", "input": "hi", "temperature": 2.5}, "temperature"),
        ({"model": "gpt-5.2", "input": "hi", "temperature": -0.1}, "temperature"),
        ({"model": "gpt-5.2", "input": "hi", "top_p": 1.5}, "top_p"),
        ({"model": "gpt-5.2", "input": "hi", "top_logprobs": 21}, "top_logprobs"),
        ({"model": "gpt-5.2", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "gpt-5.2", "input": "hi", "max_tool_calls": 0}, "max_tool_calls"),
        ({"model": "gpt-5.2", "input": "hi", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"model": "gpt-5.2", "input": "hi", "metadata": {"k" * 65: "v"}}, "metadata"),
        ({"model": "gpt-5.2", "input": "hi", "metadata": {"k": "v" * 513}}, "metadata"),
        ({"model": "gpt-5.2", "input": "hi", "include": ["nope"]}, "include[0]"),
        ({"model": "gpt-5.2", "input": "hi", "include": ["reasoning.encrypted_content"] * 9}, "include"),
        ({"model": "gpt-5.2", "input": "hi", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"model": "gpt-5.2", "input": "hi", "text": {"format": {"type": "json_schema"}}}, "text.format.name"),
        ({"model": "gpt-5.2", "input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"model": "gpt-5.2", "input": "hi", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "gpt-5.2", "input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "gpt-5.2", "input": "hi", "tools": [{"type": "custom", "name": "f", "cache_control": 1}]},
         "tools[0].cache_control"),
        ({"model": "gpt-5.2", "input": "hi", "tools": [{"type": "function", "name": "bad name!"}]}, "tools[0].name"),
        ({"model": "gpt-5.2", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "gpt-5.2", "input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"model": "gpt-5.2", "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
         "input[0].content[0].text"),
        ({"model": "gpt-5.2", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"model": "gpt-5.2", "input": [{"type": "function_call_output", "call_id": "c", "output": [
            {"type": "input_text"}]}]}, "input[0].output[0].text"),
        ({"model": "gpt-5.2", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "x", "cache_control": True}]}]}, "input[0].content[0].cache_control"),
        ({"model": "gpt-5.2", "input": "hi", "routing": {"model": {"sort": "latency"}}}, "routing.model.sort"),
        ({"model": "gpt-5.2", "input": "hi", "routing": {"provider": {"interval": "soon"}}},
         "routing.provider.interval"),
        ({"model": "gpt-5.2", "input": "hi", "cache_control": {"type": "ephemeral", "ttl": "2h"}},
         "cache_control.ttl"),
        ({"model": "gpt-5.2", "input": "hi", "stream": "yes"}, "stream"),
    ],
)
def test_invalid_requests_name_the_param(gateway: RunningGateway, upstream: ReplayServer, body: dict,
                                         param: str) -> None:
    error = assert_error(post(gateway, body), 400, param)
    assert error["type"] == "invalid_request_error"
    assert upstream.requests == []  # nothing reached the provider


def test_unsupported_fields_are_accepted_and_ignored(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml")[0])
    response = client.responses.create(
        model="gpt-5.2", input="hi", background=False, truncation="auto", service_tier="flex",
        safety_identifier="user-1", prompt_cache_retention="24h", metadata={"team": "a"},
        extra_body={"routing": {"model": {"fallbacks": ["chat"], "sort": "p90_latency"}},
                    "cache_control": {"type": "ephemeral", "ttl": "1h"}, "context_management": [],
                    "prompt": {"id": "p"}},
    )
    assert response.status == "completed"
    sent = upstream.requests[-1].json
    for ignored in ("background", "truncation", "service_tier", "safety_identifier", "routing", "cache_control",
                    "context_management", "prompt"):
        assert ignored not in sent
    assert sent["metadata"] == {"team": "a"}
    assert response.metadata == {"team": "a"}


def test_malformed_json_and_wrong_content_type(gateway: RunningGateway) -> None:
    assert_error(post(gateway, None, content=b'{"model": "gpt-5.2", "input": '), 400)
    assert_error(post(gateway, None, content=b"[1, 2]"), 400)
    resp = post(gateway, None, content=b"model=x", headers={"content-type": "application/x-www-form-urlencoded"})
    assert_error(resp, 415)


def test_oversized_body_is_413(gateway: RunningGateway) -> None:
    limit = gateway.app.config.server.max_body_bytes
    resp = post(gateway, None, content=b'{"model":"gpt-5.2","input":"' + b"x" * (limit + 1) + b'"}')
    assert_error(resp, 413)


def test_authentication(gateway: RunningGateway) -> None:
    body = {"model": "gpt-5.2", "input": "hi"}
    resp = httpx.post(f"{gateway.url}/v1/responses", json=body, timeout=10)
    assert_error(resp, 401)
    resp = httpx.post(f"{gateway.url}/v1/responses", json=body, headers={"authorization": "Bearer sk-wrong"},
                      timeout=10)
    assert_error(resp, 401)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-wrong", max_retries=0).models.list()


def test_unknown_model_is_404_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="no-such-model", input="hi")
    assert "no-such-model" in info.value.message
    assert info.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nowhere/gpt-5.2", input="hi")


def test_alias_and_provider_prefixed_names(client: openai.OpenAI, upstream: ReplayServer) -> None:
    exchange = load(FIX / "openai-chat/vercel-ai/openai-text.json")[0]
    for name in ("chat", "CHAT-MODEL", "replay-chat/chat-model", "replay-chat/some-local-model"):
        upstream.enqueue(exchange)
        response = client.responses.create(model=name, input="hi")
        assert response.status == "completed"
    # An ad-hoc upstream id on a known provider is sent as asked, unpriced.
    assert upstream.requests[-1].json["model"] == "some-local-model"
    assert response.model == "replay-chat/some-local-model"
    assert response.cost["total"] is None  # type: ignore[attr-defined]  # unknown, not free
    assert upstream.requests[-2].json["model"] == "gpt-4o-2024-08-06"


def test_models_endpoint(client: openai.OpenAI, gateway: RunningGateway) -> None:
    models = {model.id: model for model in client.models.list()}
    assert {"gpt-5.2", "chat-model", "failover-model"} <= set(models)
    card = models["gpt-5.2"].model_dump()
    assert card["object"] == "model" and card["owned_by"] == "openai" and isinstance(card["created"], int)
    assert card["aliases"] == ["gpt5"]
    assert card["providers"] == ["replay-openai"]
    assert card["context_window"] == 400000
    assert "tools" in card["capabilities"]
    assert card["routes"][0]["price"]["input"] == 1.75
    one = client.models.retrieve("gpt5")
    assert one.id == "gpt-5.2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_unknown_route_and_method(gateway: RunningGateway) -> None:
    assert_error(httpx.get(f"{gateway.url}/v1/nothing", headers=AUTH), 404)
    assert_error(httpx.get(f"{gateway.url}/v1/responses", headers=AUTH), 405)


def test_capability_mismatch_is_400_naming_the_field(gateway: RunningGateway, upstream: ReplayServer) -> None:
    body = {"model": "text-only", "input": "hi", "tools": [{"type": "function", "name": "f", "parameters": {}}]}
    assert_error(post(gateway, body), 400, "tools")
    body = {"model": "text-only", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://example.com/a.png"}]}]}
    assert_error(post(gateway, body), 400, "input")
    # A hosted tool the protocol has no equivalent for, on a provider configured to refuse it.
    body = {"model": "chat-strict", "input": "hi", "tools": [{"type": "web_search"}]}
    assert_error(post(gateway, body), 400, "tools[0].type")
    assert upstream.requests == []


def test_hosted_tool_without_equivalent_is_dropped_and_named_in_a_header(gateway: RunningGateway,
                                                                        upstream: ReplayServer) -> None:
    # The default (`unsupported_tools: drop`): the request goes without the tool, the answer says so.
    answer = load(FIX / "openai-chat/vercel-ai/openai-text.json")[0]
    streamed = load(FIX / "openai-chat/vercel-ai/openai-text.chunks.txt")[0]
    tools = [{"type": "web_search", "external_web_access": False}, {"type": "function", "name": "f"},
             {"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "web_search"}]
    for stream in (False, True):
        upstream.enqueue(streamed if stream else answer)
        resp = post(gateway, {"model": "chat", "input": "hi", "tools": tools, "stream": stream})
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-sluice-dropped-tools"] == "web_search, file_search"
        assert [t["function"]["name"] for t in upstream.requests[-1].json["tools"]] == ["f"]
    # Tool types come from the client: only token characters reach the header.
    upstream.enqueue(answer)
    resp = post(gateway, {"model": "chat", "input": "hi", "tools": [{"type": "evil\r\nset-cookie: a=b"}]})
    assert resp.status_code == 200 and resp.headers["x-sluice-dropped-tools"] == "evilset-cookie:ab"
    assert "set-cookie" not in resp.headers
    # Nothing dropped: no header.
    upstream.enqueue(answer)
    resp = post(gateway, {"model": "chat", "input": "hi", "tools": [{"type": "function", "name": "f"}]})
    assert resp.status_code == 200 and "x-sluice-dropped-tools" not in resp.headers


def test_previous_response_id_unknown_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-5.2", input="hi", previous_response_id="resp_unknown")


# --- upstream errors ---------------------------------------------------------------------------


def _error_exchange(status: int, body: bytes, headers: dict[str, str] | None = None) -> Exchange:
    return Exchange(method="POST", path="/v1/chat/completions", request_body=None, status=status,
                    headers={"content-type": "application/json", **(headers or {})}, body=body, stream=False)


def test_upstream_400_keeps_status_and_message(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "openai-responses/pydantic-ai/test_openai_responses_model_http_error.yaml")[0])
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="gpt-5.2", input="hi")
    assert "temperature" in info.value.message
    assert info.value.body["param"] == "temperature"  # type: ignore[index]


def test_upstream_429_keeps_retry_after(gateway: RunningGateway, upstream: ReplayServer) -> None:
    # The only route is rate limited for longer than the gateway waits (routing.max_retry_wait):
    # not retried sooner, and the client gets the 429 with the provider's Retry-After.
    upstream.enqueue(_error_exchange(429, b'{"error":{"message":"Rate limit reached","type":"requests",'
                                          b'"code":"rate_limit_exceeded"}}', {"retry-after": "30"}))
    resp = post(gateway, {"model": "chat", "input": "hi"})
    error = assert_error(resp, 429)
    assert resp.headers["retry-after"] == "30"
    assert "Rate limit reached" in error["message"] and error["code"] == "rate_limit_exceeded"
    assert len(upstream.requests) == 1


def test_upstream_insufficient_quota(client: openai.OpenAI, upstream: ReplayServer) -> None:
    # OpenAI says "no credit left" with a 429, but no wait fixes it: the operator's billing, like a
    # 402. Not retried, and a 424 for the client (a 429 would have its SDK retry for nothing).
    upstream.enqueue(load(FIX / "openai-responses/vercel-ai/openai-error.1.json")[0])
    with pytest.raises(openai.APIStatusError) as info:
        client.responses.create(model="gpt-5.2", input="hi")
    assert info.value.status_code == 424
    assert info.value.code == "insufficient_quota"
    assert "replay-openai: You exceeded your current quota" in info.value.message
    assert len(upstream.requests) == 1


def test_provider_keys_never_leak(gateway: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue(_error_exchange(401, b'{"error":{"message":"Incorrect API key provided: '
                                          b'sk-upstream-secret-chat-0000.","type":"invalid_request_error",'
                                          b'"code":"invalid_api_key"}}'))
    resp = post(gateway, {"model": "chat", "input": "hi"})
    # The provider refused Sluice's key: a 424 naming the provider, never a 401 that would tell
    # the client its own key is wrong.
    error = assert_error(resp, 424)
    assert error["message"].startswith("replay-chat: Incorrect API key provided")
    assert "sk-upstream-secret" not in resp.text
    assert upstream.requests[-1].headers["authorization"] == "Bearer sk-upstream-secret-chat-0000"
    assert len(upstream.requests) == 1  # a refused key is not retried


def test_failover_to_next_route(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "openai-chat/vercel-ai/openai-text.json")[0])
    response = client.responses.create(model="failover-model", input="hi")
    assert response.model == "replay-chat/gpt-4o"
    assert response.status == "completed"


def test_no_route_served_is_424(gateway: RunningGateway) -> None:
    error = assert_error(post(gateway, {"model": "dead-model", "input": "hi"}), 424)
    assert "dead" in error["message"]
    error = assert_error(post(gateway, {"model": "dead-model", "input": "hi", "stream": True}), 424)


def test_upstream_5xx_then_fallback_model(client: openai.OpenAI, upstream: ReplayServer) -> None:
    # A 503 is retried once on the same route (routing.retries, default 1), then the fallback serves.
    upstream.enqueue([_error_exchange(503, b'{"error":{"message":"overloaded","type":"server_error"}}')] * 2)
    upstream.enqueue(load(FIX / "openai-chat/vercel-ai/openai-text.json")[0])
    response = client.responses.create(model="gpt-5.2", input="hi",
                                       extra_body={"routing": {"model": {"fallbacks": ["chat"]}}})
    assert response.model == "replay-chat/gpt-4o-2024-08-06"
    assert [r.path for r in upstream.requests] == ["/v1/responses", "/v1/responses", "/v1/chat/completions"]


def test_route_that_cannot_carry_the_request_is_skipped(client: openai.OpenAI, upstream: ReplayServer) -> None:
    # `web_search` is refused by the strict chat route, so the fallback model's Responses route serves it.
    upstream.enqueue(load(FIX / "openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml")[0])
    response = client.responses.create(model="chat-strict", input="hi", tools=[{"type": "web_search"}],
                                       extra_body={"routing": {"model": {"fallbacks": ["gpt-5.2"]}}})
    assert response.model == "replay-openai/gpt-5.2"
    assert [r.path for r in upstream.requests] == ["/v1/responses"]


def test_unreadable_upstream_answer_fails_over(client: openai.OpenAI, upstream: ReplayServer) -> None:
    # An unreadable answer is retried once on the same route, then the next route serves.
    upstream.enqueue([_error_exchange(200, b"[]")] * 2)  # valid JSON, not a Response
    upstream.enqueue(load(FIX / "openai-chat/vercel-ai/openai-text.json")[0])
    response = client.responses.create(model="gpt-5.2", input="hi",
                                       extra_body={"routing": {"model": {"fallbacks": ["chat"]}}})
    assert response.model == "replay-chat/gpt-4o-2024-08-06"
    assert [r.path for r in upstream.requests] == ["/v1/responses", "/v1/responses", "/v1/chat/completions"]


def test_unreadable_upstream_answer_alone_is_424(gateway: RunningGateway, upstream: ReplayServer) -> None:
    upstream.enqueue(_error_exchange(200, b"not json at all"))
    assert_error(post(gateway, {"model": "gpt-5.2", "input": "hi"}), 424)


def test_part_level_cache_control_never_reaches_openai(client: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(load(FIX / "openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml")[0])
    client.responses.create(model="gpt-5.2", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}])
    sent = upstream.requests[-1].json
    assert sent["input"][0]["content"] == [{"type": "input_text", "text": "hi"}]


@pytest.mark.parametrize("name", ["replay-chat/x?alt=json#", "replay-chat/../../v1/files", "replay-chat/a b"])
def test_ad_hoc_model_ids_cannot_reshape_upstream_urls(gateway: RunningGateway, upstream: ReplayServer,
                                                       name: str) -> None:
    assert_error(post(gateway, {"model": name, "input": "hi"}), 400, "model")
    assert upstream.requests == []


def test_unknown_fallback_names_its_param(gateway: RunningGateway) -> None:
    body = {"model": "gpt-5.2", "input": "hi", "routing": {"model": {"fallbacks": ["chat", "nope"]}}}
    assert_error(post(gateway, body), 404, "routing.model.fallbacks[1]")


def test_model_card_by_provider_prefixed_name(client: openai.OpenAI) -> None:
    assert client.models.retrieve("replay-openai/gpt-5.2").id == "gpt-5.2"
