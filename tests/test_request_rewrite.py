"""A stage that rewrites the request is never bypassed: adapters read only the canonical request.

Every text of a request (instructions, every message's text, reasoning text, function-call
arguments and outputs, tool descriptions and their schemas' descriptions) is rewritten, and no
original text may appear in the body any adapter builds — and, through a running gateway, in
what the upstream receives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
import openai
import pytest

from sluice.canonical.request import CanonicalRequest, parse_request
from sluice.canonical.texts import map_texts
from sluice.config import ProviderConfig
from sluice.pipeline import RequestContext, Stage
from sluice.providers import create_adapter
from tests.conftest import CONFIG, MASTER_KEY, RunningGateway, _free_port, running_gateway
from tests.replay.recordings import fixtures_root, load
from tests.replay.server import ReplayServer

FIX = fixtures_root()

WEATHER = {
    "type": "function", "name": "get_weather", "description": "SECRET tool description",
    "parameters": {"type": "object", "title": "SECRET schema title",
                   "properties": {"city": {"type": "string", "description": "SECRET city description"},
                                  "unit": {"type": "string", "enum": ["c", "f"],
                                           "description": "SECRET unit description"}},
                   "required": ["city"]},
}
REQUEST: dict[str, Any] = {
    "model": "m",
    "instructions": "SECRET instructions",
    "tools": [WEATHER],
    "input": [
        {"role": "developer", "content": "SECRET developer message"},
        {"role": "user", "content": [{"type": "input_text", "text": "SECRET user text"},
                                     {"type": "input_text", "text": "SECRET second part"}]},
        {"role": "assistant", "content": "SECRET earlier answer"},
        {"role": "user", "content": "SECRET follow-up"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "SECRET summary"}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": json.dumps({"city": "SECRET city"})},
        {"type": "function_call_output", "call_id": "call_1", "output": "SECRET tool result"},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather",
         "arguments": json.dumps({"city": "SECRET second city"})},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "SECRET tool result part"}]},
    ],
}
PROTOCOLS = ("openai", "openai-chat", "anthropic", "gemini", "bedrock")


def mask(text: str) -> str:
    return text.replace("SECRET", "masked")


def body_of(protocol: str, request: CanonicalRequest) -> bytes:
    """The upstream body the protocol's adapter builds for `request`."""
    adapter: Any = create_adapter(protocol, ProviderConfig(type=protocol, base_url="http://127.0.0.1:9",  # type: ignore[arg-type]
                                                           api_key="k", region="us-east-1"))
    adapter.check(request, "model-id")
    if protocol == "openai":
        return adapter.body(request, "model-id", False)
    if protocol == "openai-chat":
        return msgspec.json.encode(adapter.body(request, "model-id", False))
    if protocol == "anthropic":
        return adapter.body(request, "model-id", False)[0]
    if protocol == "gemini":
        return adapter.body(request, "model-id")
    return msgspec.json.encode(adapter.body(request, "model-id")[0])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_original_text_reaches_any_adapter_body(protocol: str) -> None:
    original = parse_request(json.dumps(REQUEST).encode())
    before = body_of(protocol, original)
    # The check can fail: the original texts are all in the body the adapter builds...
    for text in ("SECRET instructions", "SECRET developer message", "SECRET user text", "SECRET second part",
                 "SECRET earlier answer", "SECRET follow-up", "SECRET city", "SECRET tool result",
                 "SECRET second city", "SECRET tool result part", "SECRET tool description",
                 "SECRET city description", "SECRET unit description"):
        assert text.encode() in before, f"{protocol} does not send {text!r}"
    # ...and none of them once a stage rewrote the request.
    after = body_of(protocol, map_texts(original, mask))
    assert b"SECRET" not in after
    assert after.count(b"masked") >= 13
    # The rewrite is a new request: the client's own stays as sent (the Response echoes it).
    assert original.req.instructions == "SECRET instructions"


class RewriteStage(Stage):
    name = "rewrite"

    async def request(self, ctx: RequestContext) -> None:
        ctx.request = map_texts(ctx.request, mask)


@pytest.fixture(scope="module")
def gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("rewrite") / "sluice.db"
    text = CONFIG.format(db=db, master=MASTER_KEY, upstream=upstream.url, dead_port=_free_port())
    with running_gateway(text) as running:
        assert running.app.pipeline is not None
        running.app.pipeline.stages.append(RewriteStage())
        yield running


@pytest.mark.parametrize("model", ["gpt-5.2", "chat"], ids=["openai", "openai-chat"])
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_a_request_stage_rewrites_what_the_upstream_receives(gw: RunningGateway, upstream: ReplayServer, model: str,
                                                             stream: bool) -> None:
    answer = (FIX / "openai-responses/simonw-llm/test_responses_basic_streaming.yaml" if model == "gpt-5.2"
              else FIX / "openai-chat/vercel-ai/openai-text.chunks.txt")
    upstream.enqueue(load(answer)[0])
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)
    body = {**REQUEST, "model": model, "stream": True}
    if stream:
        with client.responses.stream(**{k: v for k, v in body.items() if k != "stream"}) as events:
            response = events.get_final_response()
    else:
        upstream.reset()
        upstream.enqueue(load(FIX / ("openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml"
                                     if model == "gpt-5.2" else "openai-chat/vercel-ai/openai-text.json"))[0])
        response = client.responses.create(**{k: v for k, v in body.items() if k != "stream"})
    sent = upstream.requests[-1].body
    assert b"SECRET" not in sent and b"masked" in sent
    # The Response reports the request as the client sent it.
    assert response.instructions == "SECRET instructions"
    assert response.tools[0].description == "SECRET tool description"  # type: ignore[union-attr]
