"""Writes tests/recordings/bedrock/: Bedrock scenarios the shared fixtures lack, in their shapes.

Run `python -m tests.bedrock_make_recordings` to regenerate. Stream bodies follow the vercel
`*.chunks.txt` shape (one decoded ConverseStream event per line); JSON bodies the vercel `*.json`
shape; errors and exception frames the pydantic-ai cassette shape (status, lower-cased headers,
`!!binary` AWS eventstream body). Ids, signatures and token counts are made up (and look it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.replay.recordings import encode_eventstream_frame

OUT = Path(__file__).parent / "recordings" / "bedrock"

SIGNATURE_1 = ("EqQBCkgIBxABGAIqQFakeSluiceTestSignatureTurnOneNotARealClaudeSignature0000000000000000000000000000"
               "0000000000000000000000000000000000000000SluiceFakeSigAA==")
SIGNATURE_2 = ("EqQBCkgIBxABGAIqQFakeSluiceTestSignatureTurnTwoNotARealClaudeSignature1111111111111111111111111111"
               "1111111111111111111111111111111111111111SluiceFakeSigBB==")
THINK_1 = "The user asks for the weather in Paris. I should call get_weather with city Paris."
THINK_2 = "The tool says 18°C and sunny. I can answer now."
ANSWER_2 = "It is 18°C and sunny in Paris right now."
TOOL_ID = "tooluse_SluiceFakeToolUse01"

TURN_1_EVENTS: list[dict[str, Any]] = [
    {"messageStart": {"role": "assistant"}},
    {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": THINK_1[:30]}}}},
    {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": THINK_1[30:]}}}},
    {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": SIGNATURE_1}}}},
    {"contentBlockStop": {"contentBlockIndex": 0}},
    {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"text": "Let me check the weather."}}},
    {"contentBlockStop": {"contentBlockIndex": 1}},
    {"contentBlockStart": {"contentBlockIndex": 2,
                           "start": {"toolUse": {"toolUseId": TOOL_ID, "name": "get_weather"}}}},
    {"contentBlockDelta": {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{\"city\": "}}}},
    {"contentBlockDelta": {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "\"Paris\"}"}}}},
    {"contentBlockStop": {"contentBlockIndex": 2}},
    {"messageStop": {"stopReason": "tool_use"}},
    {"metadata": {"usage": {"inputTokens": 412, "outputTokens": 96, "totalTokens": 508, "cacheReadInputTokens": 0,
                            "cacheWriteInputTokens": 0}, "metrics": {"latencyMs": 1711}}},
]
TURN_2_EVENTS: list[dict[str, Any]] = [
    {"messageStart": {"role": "assistant"}},
    {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": THINK_2}}}},
    {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": SIGNATURE_2}}}},
    {"contentBlockStop": {"contentBlockIndex": 0}},
    {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"text": ANSWER_2[:14]}}},
    {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"text": ANSWER_2[14:]}}},
    {"contentBlockStop": {"contentBlockIndex": 1}},
    {"messageStop": {"stopReason": "end_turn"}},
    {"metadata": {"usage": {"inputTokens": 38, "outputTokens": 41, "totalTokens": 579, "cacheReadInputTokens": 500,
                            "cacheWriteInputTokens": 0}, "metrics": {"latencyMs": 1204}}},
]


def _converse(content: list[dict[str, Any]], stop: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {"metrics": {"latencyMs": 1500}, "output": {"message": {"content": content, "role": "assistant"}},
            "stopReason": stop, "usage": usage}


TURN_1_JSON = _converse(
    [{"reasoningContent": {"reasoningText": {"signature": SIGNATURE_1, "text": THINK_1}}},
     {"text": "Let me check the weather."},
     {"toolUse": {"toolUseId": TOOL_ID, "name": "get_weather", "input": {"city": "Paris"}}}],
    "tool_use", TURN_1_EVENTS[-1]["metadata"]["usage"])
TURN_2_JSON = _converse(
    [{"reasoningContent": {"reasoningText": {"signature": SIGNATURE_2, "text": THINK_2}}}, {"text": ANSWER_2}],
    "end_turn", TURN_2_EVENTS[-1]["metadata"]["usage"])
STRUCTURED_JSON = _converse([{"text": "{\"city\":\"Mexico City\",\"country\":\"Mexico\"}"}], "end_turn",
                            {"inputTokens": 120, "outputTokens": 14, "totalTokens": 134})
# Cache writes split by TTL (TokenUsage.cacheDetails, sorted 1h before 5m), next to a cache read.
CACHE_1H_USAGE = {"inputTokens": 20, "outputTokens": 50, "totalTokens": 4070, "cacheReadInputTokens": 1000,
                  "cacheWriteInputTokens": 3000,
                  "cacheDetails": [{"ttl": "1h", "inputTokens": 2000}, {"ttl": "5m", "inputTokens": 1000}]}
CACHE_1H_EVENTS: list[dict[str, Any]] = [
    {"messageStart": {"role": "assistant"}},
    {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "The contract runs for two years."}}},
    {"contentBlockStop": {"contentBlockIndex": 0}},
    {"messageStop": {"stopReason": "end_turn"}},
    {"metadata": {"usage": CACHE_1H_USAGE, "metrics": {"latencyMs": 903}}},
]
CACHE_1H_JSON = _converse([{"text": "The contract runs for two years."}], "end_turn", CACHE_1H_USAGE)
GUARDRAIL_JSON = _converse([{"text": "Sorry, the model cannot answer this question."}], "guardrail_intervened",
                           {"inputTokens": 15, "outputTokens": 0, "totalTokens": 15})


def _frame(kind: str, payload: dict[str, Any], message_type: str = "event") -> bytes:
    type_header = ":event-type" if message_type == "event" else ":exception-type"
    return encode_eventstream_frame({type_header: kind, ":content-type": "application/json",
                                     ":message-type": message_type},
                                    json.dumps(payload, separators=(",", ":")).encode())


def _cassette(status: int, headers: dict[str, str], body: bytes | dict[str, Any], uri: str) -> dict[str, Any]:
    response: dict[str, Any] = {"headers": {k: [v] for k, v in headers.items()},
                                "status": {"code": status, "message": "x"}}
    if isinstance(body, dict):
        response["parsed_body"] = body
    else:
        response["body"] = {"string": body}
    return {"interactions": [{"request": {"body": "{}", "headers": {}, "method": "POST", "uri": uri},
                              "response": response}], "version": 1}


URI = "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/"
ERRORTYPE = ":http://internal.amazon.com/coral/com.amazon.bedrock/"


def cassettes() -> dict[str, dict[str, Any]]:
    midstream = b"".join([
        _frame("messageStart", {"role": "assistant"}),
        _frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "The capital"}}),
        _frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " of France"}}),
        _frame("throttlingException", {"message": "Too many tokens, please wait before trying again."},
               "exception"),
    ])
    first = _frame("serviceUnavailableException", {"message": "Bedrock is unable to process your request."},
                   "exception")
    model_error = b"".join([
        _frame("messageStart", {"role": "assistant"}),
        _frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Partial"}}),
        _frame("modelStreamErrorException", {"message": "Model stream error", "originalStatusCode": 500,
                                             "originalMessage": "upstream model failed"}, "exception"),
    ])
    stream_headers = {"content-type": "application/vnd.amazon.eventstream"}
    json_headers = {"content-type": "application/json"}
    return {
        "error-throttling.yaml": _cassette(
            429, {**json_headers, "x-amzn-errortype": "ThrottlingException" + ERRORTYPE},
            {"message": "Too many requests, please wait before trying again."}, URI + "converse"),
        "error-service-unavailable.yaml": _cassette(
            503, {**json_headers, "x-amzn-errortype": "ServiceUnavailableException" + ERRORTYPE},
            {"message": "Bedrock is unable to process your request."}, URI + "converse"),
        "error-access-denied.yaml": _cassette(
            403, {**json_headers, "x-amzn-errortype": "AccessDeniedException" + ERRORTYPE},
            {"Message": "You don't have access to the model with the specified model ID."}, URI + "converse"),
        "error-model-not-ready.yaml": _cassette(
            429, {**json_headers, "x-amzn-errortype": "ModelNotReadyException" + ERRORTYPE},
            {"message": "Model is not ready for inference. Wait and try your request again."}, URI + "converse"),
        "error-resource-not-found.yaml": _cassette(
            404, {**json_headers, "x-amzn-errortype": "ResourceNotFoundException" + ERRORTYPE},
            {"message": "Model not found."}, URI + "converse"),
        "stream-throttling-midstream.yaml": _cassette(200, stream_headers, midstream, URI + "converse-stream"),
        "stream-exception-first.yaml": _cassette(200, stream_headers, first, URI + "converse-stream"),
        "stream-model-error.yaml": _cassette(200, stream_headers, model_error, URI + "converse-stream"),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, events in (("tool-loop-reasoning.1.chunks.txt", TURN_1_EVENTS),
                         ("tool-loop-reasoning.2.chunks.txt", TURN_2_EVENTS),
                         ("cache-write-1h.chunks.txt", CACHE_1H_EVENTS)):
        (OUT / name).write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events))
    for name, data in (("tool-loop-reasoning.1.json", TURN_1_JSON), ("tool-loop-reasoning.2.json", TURN_2_JSON),
                       ("structured-output.json", STRUCTURED_JSON), ("guardrail-intervened.json", GUARDRAIL_JSON),
                       ("cache-write-1h.json", CACHE_1H_JSON)):
        (OUT / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    for name, doc in cassettes().items():
        (OUT / name).write_text(yaml.safe_dump(doc, sort_keys=False, width=120))


if __name__ == "__main__":
    main()
