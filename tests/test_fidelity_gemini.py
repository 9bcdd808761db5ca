"""Gemini fidelity: one code execution stays one item (and goes back as one pair), thoughts are
included only when a summary is asked for, and `input_image.detail` becomes a media resolution.

Driven through a real gateway with the official `openai` SDK; the upstream replays
tests/recordings/gemini/code-execution-empty-text.* (see PROVENANCE.md there) and recorded text
answers. What Sluice sends is checked with google-genai's own request types.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from sluice.canonical.reasoning import unseal
from tests.conftest import MASTER_KEY, RunningGateway, running_gateway
from tests.replay import Exchange, ReplayServer, load
from tests.test_provider_gemini import PNG, TEXT, _config, assert_valid_gemini_request, chunks_of

OWN = Path(__file__).parent / "recordings" / "gemini"
MODEL = "gemini-3-flash-preview"
CODE_TOOL = {"type": "code_interpreter", "container": {"type": "auto"}}


@pytest.fixture(scope="module")
def gw(upstream: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = Path(tmp_path_factory.mktemp("gemini-fidelity-db")) / "sluice.db"
    with running_gateway(_config(upstream.url, db)) as running:
        yield running


@pytest.fixture
def sdk(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=20)


def _own(name: str) -> Exchange:
    return load(OWN / name, provider="gemini")[0]


def _sent(upstream: ReplayServer) -> dict[str, Any]:
    body = upstream.requests[-1].json
    assert_valid_gemini_request(body)
    return body


def _ask(sdk: openai.OpenAI, streamed: bool, **kwargs: Any) -> Any:
    if not streamed:
        return sdk.responses.create(**kwargs)
    with sdk.responses.stream(**kwargs) as stream:
        for _ in stream:
            pass
        return stream.get_final_response()


# --- 3. an empty text part inside a code execution ------------------------------------------------------


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "create"])
def test_an_empty_text_part_does_not_split_a_code_execution(sdk: openai.OpenAI, upstream: ReplayServer,
                                                            streamed: bool) -> None:
    """executableCode, {"text": ""}, codeExecutionResult: one code_interpreter_call with code and output;
    sent back, exactly the pair Gemini produced (and its signature on the code)."""
    exchange = _own("code-execution-empty-text.chunks.txt" if streamed else "code-execution-empty-text.json")
    parts = [p for chunk in chunks_of(exchange) for p in chunk["candidates"][0]["content"]["parts"]]
    code, result = parts[0], parts[2]
    assert parts[1] == {"text": ""}
    upstream.enqueue(exchange)
    request = {"model": MODEL, "tools": [CODE_TOOL], "include": ["reasoning.encrypted_content"]}
    first = _ask(sdk, streamed, input="What is 2**10? Run code.", **request)
    kinds = [i.type for i in first.output]
    assert kinds == ["reasoning", "code_interpreter_call", "message"]
    call = first.output[1]
    assert call.code == code["executableCode"]["code"]
    assert [o.logs for o in call.outputs or ()] == [result["codeExecutionResult"]["output"]]
    assert call.status == "completed"
    assert unseal(first.output[0].encrypted_content, "gemini")["g"] == [{"s": code["thoughtSignature"], "a": "n"}]

    history = [{"role": "user", "content": "What is 2**10? Run code."},
               *[i.model_dump(exclude_none=True) for i in first.output], {"role": "user", "content": "Thanks"}]
    upstream.enqueue(_own("code-execution-empty-text.json"))
    sdk.responses.create(input=history, **request)  # type: ignore[arg-type]
    model_turn = _sent(upstream)["contents"][1]
    assert model_turn == {"role": "model", "parts": [
        {"executableCode": {"language": "PYTHON", "code": code["executableCode"]["code"]},
         "thoughtSignature": code["thoughtSignature"]},
        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": result["codeExecutionResult"]["output"]}},
        {"text": parts[3]["text"]},
    ]}


def test_a_signature_on_the_empty_part_follows_the_execution(sdk: openai.OpenAI, upstream: ReplayServer) -> None:
    body = _own("code-execution-empty-text.json").json()
    parts = body["candidates"][0]["content"]["parts"]
    parts[1]["thoughtSignature"] = "RU1QVFlTSUc="
    upstream.enqueue(Exchange(method="POST", path=f"/v1beta/models/{MODEL}:generateContent", request_body=None,
                              status=200, headers={"content-type": "application/json"},
                              body=json.dumps(body).encode(), stream=False))
    request = {"model": MODEL, "tools": [CODE_TOOL], "include": ["reasoning.encrypted_content"]}
    first = sdk.responses.create(input="2**10?", **request)  # type: ignore[arg-type]
    assert [i.type for i in first.output] == ["reasoning", "code_interpreter_call", "reasoning", "message"]
    assert unseal(first.output[2].encrypted_content, "gemini")["g"] == [{"s": "RU1QVFlTSUc=", "a": "p"}]

    upstream.enqueue(TEXT)
    sdk.responses.create(input=[{"role": "user", "content": "2**10?"},  # type: ignore[arg-type]
                                *[i.model_dump(exclude_none=True) for i in first.output]], **request)
    sent_parts = _sent(upstream)["contents"][1]["parts"]
    assert [next(iter(p)) for p in sent_parts] == ["executableCode", "codeExecutionResult", "text"]
    assert sent_parts[1]["thoughtSignature"] == "RU1QVFlTSUc="


def test_an_execution_split_in_two_items_goes_back_as_one_pair(sdk: openai.OpenAI, upstream: ReplayServer) -> None:
    """A history holding the two halves an older answer made (code without output, output without
    code) is sent as the one pair Gemini produced, not as two."""
    halves = [
        {"type": "code_interpreter_call", "id": "ci_1", "status": "completed", "code": "print(1024)",
         "container_id": "gemini", "outputs": []},
        {"type": "code_interpreter_call", "id": "ci_2", "status": "completed", "code": None,
         "container_id": "gemini", "outputs": [{"type": "logs", "logs": "1024\n"}]},
    ]
    code_only = {**halves[0], "outputs": None}
    for history in (halves, [code_only, halves[1]]):
        upstream.enqueue(TEXT)
        sdk.responses.create(model=MODEL, tools=[CODE_TOOL], input=[  # type: ignore[list-item]
            {"role": "user", "content": "2**10?"}, *history, {"role": "user", "content": "Thanks"}])
        assert _sent(upstream)["contents"][1]["parts"] == [
            {"executableCode": {"language": "PYTHON", "code": "print(1024)"}},
            {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "1024\n"}},
        ]


# --- 11. thoughts only when a summary is asked for --------------------------------------------------------


@pytest.mark.parametrize(("model", "reasoning", "thinking"), [
    ("gemini-2.5-flash", {"effort": "high"}, {"thinkingBudget": 24576}),
    ("gemini-2.5-flash", {"effort": "high", "summary": "auto"}, {"thinkingBudget": 24576, "includeThoughts": True}),
    ("gemini-3-pro-preview", {"effort": "low"}, {"thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", {"effort": "low", "summary": "detailed"}, {"thinkingLevel": "LOW",
                                                                        "includeThoughts": True}),
    ("gemini-3-pro-preview", {"summary": "concise"}, {"includeThoughts": True}),
])
def test_thoughts_are_included_only_with_a_summary(sdk: openai.OpenAI, upstream: ReplayServer, model: str,
                                                   reasoning: dict[str, str], thinking: dict[str, Any]) -> None:
    upstream.enqueue(TEXT)
    sdk.responses.create(model=model, input="hi", reasoning=reasoning)  # type: ignore[arg-type]
    assert _sent(upstream)["generationConfig"]["thinkingConfig"] == thinking


# --- 10. input_image.detail -> mediaResolution ---------------------------------------------------------------

IMAGE = f"data:image/png;base64,{PNG}"


def _image(detail: str | None, url: str = IMAGE) -> dict[str, Any]:
    return {"type": "input_image", "image_url": url, **({"detail": detail} if detail else {})}


def test_gemini_3_sets_the_resolution_per_part(sdk: openai.OpenAI, upstream: ReplayServer) -> None:
    upstream.enqueue(TEXT)
    sdk.responses.create(model="gemini-3-pro-preview", input=[{"role": "user", "content": [  # type: ignore[list-item]
        {"type": "input_text", "text": "Compare."}, _image("low"), _image("high", "https://example.com/a.jpg"),
        _image("original"), _image("auto"), _image(None)]}])
    body = _sent(upstream)
    levels = [p.get("mediaResolution") for p in body["contents"][0]["parts"][1:]]
    assert levels == [{"level": "MEDIA_RESOLUTION_LOW"}, {"level": "MEDIA_RESOLUTION_HIGH"},
                      {"level": "MEDIA_RESOLUTION_ULTRA_HIGH"}, None, None]
    assert "mediaResolution" not in body.get("generationConfig", {})


def test_gemini_3_function_responses_nest_the_image_without_its_resolution(sdk: openai.OpenAI,
                                                                           upstream: ReplayServer) -> None:
    """A FunctionResponsePart holds `inlineData` only (the API's own description): the image is
    still nested in the function response, its detail is not carried there."""
    tool = {"type": "function", "name": "shot", "parameters": {"type": "object", "properties": {}}}
    upstream.enqueue(TEXT)
    sdk.responses.create(model="gemini-3-pro-preview", tools=[tool], input=[  # type: ignore[list-item]
        {"role": "user", "content": "Take a screenshot."},
        {"type": "function_call", "call_id": "c1", "name": "shot", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [_image("high")]}])
    response_part = _sent(upstream)["contents"][2]["parts"][0]["functionResponse"]
    assert response_part["parts"] == [{"inlineData": {"mimeType": "image/png", "data": PNG}}]


@pytest.mark.parametrize(("details", "resolution"), [
    (["low", "low"], "MEDIA_RESOLUTION_LOW"),
    (["high"], "MEDIA_RESOLUTION_HIGH"),
    (["original"], "MEDIA_RESOLUTION_HIGH"),
    (["low", "high"], None),  # one setting per request cannot say both
    (["low", None], None),  # an image that asks nothing keeps Gemini's default
    (["auto"], None),
])
def test_before_gemini_3_one_resolution_for_the_request(sdk: openai.OpenAI, upstream: ReplayServer,
                                                        details: list[str | None], resolution: str | None) -> None:
    upstream.enqueue(TEXT)
    sdk.responses.create(model="gemini-2.5-flash", input=[{"role": "user", "content": [  # type: ignore[list-item]
        {"type": "input_text", "text": "Look."}, *(_image(d) for d in details)]}])
    body = _sent(upstream)
    assert body.get("generationConfig", {}).get("mediaResolution") == resolution
    assert all("mediaResolution" not in part for part in body["contents"][0]["parts"])
