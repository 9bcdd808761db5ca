"""Bedrock Converse answers -> Responses output, usage and stream events.

Both paths feed the same `ResponseEventBuilder`, so a non-streaming answer has exactly the shape
`responses.stream(...).get_final_response()` reports for the same content.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from sluice.canonical.ids import new_id
from sluice.canonical.reasoning import seal
from sluice.canonical.stream import ResponseEventBuilder
from sluice.providers.answer_rules import HeldPreamble, estimate_reasoning_tokens
from sluice.providers.bedrock_request import PROTOCOL, Plan

Event = dict[str, Any]

_encode = msgspec.json.encode

# stopReason -> Responses incomplete_details.reason
INCOMPLETE = {
    "max_tokens": "max_output_tokens",
    "model_context_window_exceeded": "max_output_tokens",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# stopReasons that mean the answer is unusable.
MALFORMED = frozenset({"malformed_model_output", "malformed_tool_use"})

# AWS error name -> (status for the client, OpenAI-style code). Statuses follow the service model
# (service-2.json) except where a retryable condition deserves a clearer one.
AWS_ERRORS: dict[str, tuple[int, str]] = {
    "ValidationException": (400, "invalid_request"),
    "ConflictException": (400, "invalid_request"),
    "AccessDeniedException": (403, "access_denied"),
    "UnrecognizedClientException": (403, "access_denied"),
    "InvalidSignatureException": (403, "access_denied"),
    "ExpiredTokenException": (403, "access_denied"),
    "ResourceNotFoundException": (404, "model_not_found"),
    "ThrottlingException": (429, "rate_limit_exceeded"),
    "ServiceQuotaExceededException": (429, "quota_exceeded"),
    "InternalServerException": (500, "server_error"),
    "ModelErrorException": (502, "model_error"),
    "ModelStreamErrorException": (502, "model_error"),
    "ServiceUnavailableException": (503, "service_unavailable"),
    "ModelNotReadyException": (503, "model_not_ready"),
    "ModelTimeoutException": (504, "model_timeout"),
}


def usage(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """Converse TokenUsage -> canonical usage.

    Bedrock's `inputTokens` leaves cache reads and writes out (the recordings: inputTokens 2,
    cacheWriteInputTokens 1322, totalTokens 1329 with 5 output tokens), so they are added back.
    """
    if not raw:
        return None
    read = raw.get("cacheReadInputTokens") or 0
    write = raw.get("cacheWriteInputTokens") or 0
    input_tokens = (raw.get("inputTokens") or 0) + read + write
    output_tokens = raw.get("outputTokens") or 0
    # cacheDetails splits the writes by TTL (1h writes are billed higher than 5m ones).
    hour = sum(d.get("inputTokens") or 0 for d in raw.get("cacheDetails") or () if isinstance(d, dict)
               and d.get("ttl") == "1h")
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": read, "cached_tokens_created": write,
                                 "cache_write_1h_tokens": hour},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


class _Block:
    __slots__ = ("kind", "redacted", "signature", "text")

    def __init__(self, kind: str) -> None:
        self.kind = kind  # text | tool | json | reasoning
        self.text: list[str] = []  # reasoning text; a tool call's input pieces
        self.signature: str | None = None
        self.redacted: list[str] = []  # base64 pieces of a blob


class ConverseTranslator:
    """Converse content blocks (whole or as stream deltas) -> Responses events and output."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.builder = ResponseEventBuilder(plan.tools)
        self.blocks: dict[int, _Block] = {}
        self.stop_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.error: tuple[str, str] | None = None
        # Structured output through a tool: free text before its call is preamble (dropped).
        self._preamble = HeldPreamble(plan.json_tool is not None)
        self._reasoning_chars = 0  # characters of reasoning text, for the reasoning-token estimate

    # --- stream events -------------------------------------------------------------------------

    def feed(self, kind: str, payload: dict[str, Any]) -> list[Event]:
        if kind == "contentBlockDelta":
            return self._delta(payload.get("contentBlockIndex", 0), payload.get("delta") or {})
        if kind == "contentBlockStart":
            start = payload.get("start") or {}
            tool = start.get("toolUse")
            return self._tool_start(payload.get("contentBlockIndex", 0), tool) if tool else []
        if kind == "contentBlockStop":
            return self._stop(payload.get("contentBlockIndex", 0))
        if kind == "messageStop":
            self.stop_reason = payload.get("stopReason") or "end_turn"
        elif kind == "metadata":
            self.usage = usage(payload.get("usage"))
        return []  # messageStart, and events newer than this adapter

    def _delta(self, index: int, delta: dict[str, Any]) -> list[Event]:
        builder = self.builder
        if "text" in delta:
            return self._text(delta["text"])
        block = self.blocks.get(index)
        if "toolUse" in delta:
            if block is None:
                return []
            piece = delta["toolUse"].get("input") or ""
            if block.kind == "json":
                return builder.text(piece) if piece else []
            block.text.append(piece)
            return builder.tool_call_arguments(index, piece)
        reasoning = delta.get("reasoningContent")
        if reasoning is not None:
            if block is None:
                block = self.blocks[index] = _Block("reasoning")
            events: list[Event] = []
            text = reasoning.get("text")
            if text:
                block.text.append(text)
                self._reasoning_chars += len(text)
                if self.plan.hide:
                    pass  # Claude's thinking without reasoning.summary: sealed only, not shown
                elif self.plan.summary:
                    events = builder.reasoning_summary(text)
                else:
                    events = builder.reasoning_text(text)
            if reasoning.get("signature"):
                block.signature = (block.signature or "") + reasoning["signature"]
            if reasoning.get("redactedContent"):
                block.redacted.append(reasoning["redactedContent"])
            return events
        return []  # citation / image / toolResult deltas carry nothing the Responses output shows

    def _text(self, text: str) -> list[Event]:
        if not text or self._preamble.holds(text):
            return []
        return self.builder.text(text)

    def _tool_start(self, index: int, tool: dict[str, Any]) -> list[Event]:
        name = tool.get("name") or ""
        if name == self.plan.json_tool:
            self.blocks[index] = _Block("json")
            self._preamble.answered()
            return []
        self.blocks[index] = _Block("tool")
        return self.builder.tool_call_start(index, tool.get("toolUseId") or new_id("call"), name)

    def _flush_held(self) -> list[Event]:
        held = self._preamble.release()  # the answer tool was not called: the held text is the answer
        return self.builder.text(held) if held else []

    def _stop(self, index: int) -> list[Event]:
        block = self.blocks.pop(index, None)
        if block is None:
            return []
        if block.kind == "tool":
            # A call without arguments streams no input (or only ""): its arguments are "{}", as
            # a whole answer's `input: {}` gives.
            events = [] if "".join(block.text).strip() else self.builder.tool_call_arguments(index, "{}")
            return events + self.builder.end_tool_call(index)
        if block.kind == "reasoning":
            return self._end_reasoning(block)
        return []

    def _end_reasoning(self, block: _Block) -> list[Event]:
        builder = self.builder
        events: list[Event] = []
        state: dict[str, Any] | None = None
        if block.redacted:
            state = {"f": self.plan.family, "redacted": _join_base64(block.redacted)}
        elif block.signature is not None:
            # The signature covers the exact text, so both travel back together.
            state = {"f": self.plan.family, "text": "".join(block.text), "signature": block.signature}
        if state is not None and self.plan.seal:
            events += builder.reasoning_signature(seal(PROTOCOL, state))
        elif not block.text or self.plan.hide:
            return []  # nothing shown (redacted or hidden thinking), and no state asked for
        return events + builder.end_reasoning()

    # --- whole answers -------------------------------------------------------------------------

    def message(self, content: list[dict[str, Any]]) -> None:
        """A non-streaming answer's content blocks, through the same path as stream deltas."""
        for index, block in enumerate(content):
            if "text" in block:
                self._text(block["text"])
            elif "toolUse" in block:
                tool = block["toolUse"]
                self._tool_start(index, tool)
                arguments = _encode(tool.get("input") if tool.get("input") is not None else {}).decode()
                self._delta(index, {"toolUse": {"input": arguments}})
                self._stop(index)
            elif "reasoningContent" in block:
                content_block = block["reasoningContent"]
                text_block = content_block.get("reasoningText") or {}
                delta: dict[str, Any] = {}
                if text_block.get("text"):
                    delta["text"] = text_block["text"]
                if text_block.get("signature"):
                    delta["signature"] = text_block["signature"]
                if content_block.get("redactedContent"):
                    delta["redactedContent"] = content_block["redactedContent"]
                self._delta(index, {"reasoningContent": delta})
                self._stop(index)
            elif "citationsContent" in block:
                for generated in block["citationsContent"].get("content") or ():
                    self._text(generated.get("text") or "")

    # --- the end -------------------------------------------------------------------------------

    def finish(self) -> list[Event]:
        """Close what is open and produce the terminal event (or the error event)."""
        if self.error is not None:
            code, message = self.error
            return [{"type": "error", "code": code, "message": message, "param": None}]
        if self.stop_reason is None:
            return []  # cut short before messageStop: the gateway reports the failure
        if self.stop_reason in MALFORMED:
            return [{"type": "error", "code": "server_error",
                     "message": f"The model stopped with '{self.stop_reason}': its output could not be used.",
                     "param": None}]
        events = self._flush_held()
        for index in list(self.blocks):
            events += self._stop(index)
        incomplete = INCOMPLETE.get(self.stop_reason)
        events += self.builder.finish(incomplete=incomplete is not None)
        events.append({"type": "response.incomplete" if incomplete else "response.completed",
                       "response": self.result(incomplete)})
        return events

    def result(self, incomplete: str | None) -> dict[str, Any]:
        usage = self.usage
        if usage is not None and self._reasoning_chars:
            # Converse reports no reasoning count: estimated from the reasoning text.
            details = {"reasoning_tokens": estimate_reasoning_tokens(self._reasoning_chars, usage["output_tokens"])}
            usage = {**usage, "output_tokens_details": details}
        result: dict[str, Any] = {"status": "incomplete" if incomplete else "completed",
                                  "output": self.builder.output, "usage": usage}
        if incomplete:
            result["incomplete_details"] = {"reason": incomplete}
        return result


def _join_base64(pieces: list[str]) -> str:
    """One base64 value from blob pieces (each piece is base64 on its own, padding included)."""
    if len(pieces) == 1:
        return pieces[0]
    return base64.b64encode(b"".join(base64.b64decode(piece) for piece in pieces)).decode()


def stream_exception(kind: str, payload: dict[str, Any]) -> tuple[str, str, int]:
    """(code, message, status) of an exception frame (`throttlingException`, ...)."""
    name = kind[:1].upper() + kind[1:]
    status, code = AWS_ERRORS.get(name, (502, "upstream_error"))
    message = payload.get("message") or payload.get("Message") or payload.get("originalMessage") or name
    return code, f"{name}: {message}", status


def event_code(status: int) -> str:
    """An `error` event's code, from the closed set the SDK's `ResponseError.code` accepts."""
    if status == 429:
        return "rate_limit_exceeded"
    if status == 400:
        return "invalid_prompt"
    return "server_error"
