"""One conversation, four wire protocols: a stateless client moves between providers mid tool loop.

Output items from one provider go back as input to the next. Each adapter must carry the
function call and its result over, and drop reasoning state sealed for another provider (it could
not verify it), never send it upstream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.replay.recordings import fixtures_root, load
from tests.replay.server import ReplayServer

OWN = Path(__file__).parent / "recordings"
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}, "strict": True}


@pytest.fixture(scope="module")
def gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("cross") / "sluice.db"
    config = f"""
database: sqlite:///{db}
master_key: {MASTER_KEY}
builtin_catalog: false
providers:
  anthropic: {{type: anthropic, base_url: "{upstream.url}", api_key: test-anthropic}}
  gemini: {{type: gemini, base_url: "{upstream.url}", api_key: test-gemini}}
  openai: {{type: openai, base_url: "{upstream.url}/v1", api_key: test-openai}}
  chat: {{type: openai-chat, base_url: "{upstream.url}/v1", api_key: test-chat}}
models:
  claude: {{routes: [{{provider: anthropic, model: claude-sonnet-4-5}}]}}
  gemini: {{routes: [{{provider: gemini, model: gemini-3-pro-preview}}]}}
  gpt: {{routes: [{{provider: openai, model: gpt-5.2}}]}}
  chat: {{routes: [{{provider: chat, model: gpt-4o}}]}}
"""
    with running_gateway(config) as running:
        yield running


def test_tool_loop_moves_across_providers(gw: RunningGateway, upstream: ReplayServer) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)
    common = {"tools": [WEATHER], "reasoning": {"effort": "medium", "summary": "auto"},
              "include": ["reasoning.encrypted_content"]}
    history: list[dict] = [{"role": "user", "content": "What's the weather in Paris?"}]

    # Turn 1, Anthropic with extended thinking: reasoning (signature sealed) + a tool call.
    upstream.enqueue(load(OWN / "anthropic/tool-loop-thinking.1.sse", provider="anthropic")[0])
    with client.responses.stream(model="claude", input=history, **common) as stream:
        turn1 = stream.get_final_response()
    kinds = [item.type for item in turn1.output]
    assert "reasoning" in kinds and kinds[-1] == "function_call"
    call = turn1.output[-1]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    history += [item.model_dump(exclude_none=True) for item in turn1.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 18}'})

    # Turn 2, Gemini: the call and its result arrive; Anthropic's signature and thinking do not.
    upstream.enqueue(load(OWN / "gemini/tool-loop-thinking.2.json", provider="gemini")[0])
    turn2 = client.responses.create(model="gemini", input=history, **common)
    assert turn2.output_text == "It is 18°C and sunny in Paris."
    sent = upstream.requests[-1].json
    parts = [part for content in sent["contents"] for part in content["parts"]]
    function_call = next(p["functionCall"] for p in parts if "functionCall" in p)
    assert function_call == {"name": "get_weather", "args": {"city": "Paris"}}
    assert any("functionResponse" in p for p in parts)
    sent_text = json.dumps(sent)
    anthropic_reasoning = next(i for i in turn1.output if i.type == "reasoning")
    assert anthropic_reasoning.encrypted_content not in sent_text
    assert all(s.text not in sent_text for s in anthropic_reasoning.summary)
    history += [item.model_dump(exclude_none=True) for item in turn2.output]
    history.append({"role": "user", "content": "And tomorrow?"})

    # Turn 3, OpenAI Responses: items pass through, but no reasoning sealed for someone else.
    upstream.enqueue(load(fixtures_root() / "openai-responses/simonw-llm/test_responses_basic_non_streaming.yaml")[0])
    turn3 = client.responses.create(model="gpt", input=history, **common)
    assert turn3.status == "completed"
    sent = upstream.requests[-1].json
    assert not any(item.get("type") == "reasoning" for item in sent["input"])
    expected = [item.get("type", "message") for item in history if item.get("type") != "reasoning"]
    assert [item.get("type", "message") for item in sent["input"]] == expected
    assert expected.count("function_call") == 1 and "function_call_output" in expected

    # Turn 4, a Chat Completions server: the same history as chat messages.
    upstream.enqueue(load(fixtures_root() / "openai-chat/vercel-ai/openai-text.json")[0])
    turn4 = client.responses.create(model="chat", input=history, tools=[WEATHER])
    assert turn4.status == "completed"
    messages = upstream.requests[-1].json["messages"]
    # Turn 1's text and tool call merge into one assistant message, as chat servers expect.
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": call.arguments}
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": '{"temp_c": 18}'}
    assert messages[3]["content"] == "It is 18°C and sunny in Paris."
