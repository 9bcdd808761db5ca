"""Anthropic Messages upstream (`type: anthropic`, `POST {base_url}/v1/messages`).

Requests are folded into Anthropic's conversation shape by `anthropic_request.build_body`.
Answers, whole or streamed, go through one `MessageTranslator` that feeds the canonical
`ResponseEventBuilder`, so a non-streaming response and a stream's final response are built by
the same code: text -> message output_text (citations -> url_citation), thinking ->
reasoning (summary_text when the client asked for reasoning.summary; thinking and signature
sealed into encrypted_content), tool_use -> function_call, the forced structured-output tool ->
output_text (a text preamble before it dropped), web search -> web_search_call, MCP -> mcp_call.
Other server-tool blocks and compaction blocks are skipped; the text around them passes through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from sluice.canonical.ids import new_id
from sluice.canonical.reasoning import seal
from sluice.canonical.request import CanonicalRequest
from sluice.canonical.stream import ResponseEventBuilder
from sluice.config import ProviderConfig
from sluice.errors import InvalidRequest, UpstreamError, status_error_type
from sluice.providers.answer_rules import HeldPreamble, estimate_reasoning_tokens
from sluice.providers.anthropic_request import HOSTED_WEB_SEARCH, PROTOCOL, SUPPORTED_ITEMS, Plan, build_body
from sluice.providers.base import Adapter, Event, unsupported
from sluice.providers.transport import UpstreamClient

API_VERSION = "2023-06-01"

_encode = msgspec.json.encode
_decode = msgspec.json.decode

# stop_reason -> incomplete_details.reason (absent: completed)
_INCOMPLETE: dict[str, str | None] = {
    "max_tokens": "max_output_tokens",
    "model_context_window_exceeded": "max_output_tokens",
    # A long server-tool turn was paused (the client resends it to go on). None of the reasons the
    # Responses API names fits (max_output_tokens would be false; max_messages is missing from the
    # openai SDK's IncompleteDetails.reason before recent releases, e.g. 1.99 has only
    # max_output_tokens | content_filter), so the response is incomplete with `reason: null`.
    "pause_turn": None,
}
_REFUSAL = "The model declined to respond."
# Anthropic error type -> (client status, OpenAI-style error type, code).
_ERRORS: dict[str, tuple[int, str, str | None]] = {
    "invalid_request_error": (400, "invalid_request_error", None),
    "authentication_error": (401, "authentication_error", None),
    "billing_error": (402, "invalid_request_error", "billing_error"),
    "permission_error": (403, "permission_error", None),
    "not_found_error": (404, "not_found_error", None),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "rate_limit_error": (429, "rate_limit_error", "rate_limit_exceeded"),
    "api_error": (500, "server_error", "server_error"),
    "timeout_error": (504, "server_error", "timeout"),
    # 529 is Anthropic's own status; clients and proxies know 503 as "overloaded, retry later".
    "overloaded_error": (503, "server_error", "overloaded"),
}
_STATUS_TYPES = {529: "overloaded_error", 413: "request_too_large"}
# Result blocks of Anthropic's code execution tool (Python, bash, file edits) -> code_interpreter_call.
_CODE_RESULTS = frozenset({"code_execution_tool_result", "bash_code_execution_tool_result",
                           "text_editor_code_execution_tool_result"})


class AnthropicAdapter(Adapter):
    def __init__(self, name: str, config: ProviderConfig, client: UpstreamClient | None = None) -> None:
        super().__init__(name, config, client)
        base = (config.base_url or "https://api.anthropic.com").rstrip("/")
        # Same base_url as the anthropic SDK takes; tolerate one that already ends in /v1.
        self._url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
        self._headers = {"content-type": "application/json", "anthropic-version": API_VERSION, **config.headers}
        if config.api_key:
            self._headers["x-api-key"] = config.api_key

    # --- request -----------------------------------------------------------------------------

    hosted_tools = HOSTED_WEB_SEARCH | {"code_interpreter"}

    def carries(self, tool: dict[str, Any]) -> bool:
        # Anthropic's web search always fetches live pages: a client that allows no external
        # access (cached search only, as Codex asks by default) gets no search rather than more.
        return super().carries(tool) and tool.get("external_web_access") is not False

    def check(self, parsed: CanonicalRequest, model: str) -> None:
        parsed = self.tools(parsed).request  # namespace / custom tools flattened, unsupported hosted ones dropped
        req = parsed.req
        for i, tool in enumerate(req.tools or ()):
            kind = tool.get("type")
            if kind != "function" and kind not in self.hosted_tools:
                raise unsupported(f"tools[{i}].type", f"The '{kind}' tool", self.name)
        choice = req.tool_choice
        if isinstance(choice, dict) and choice.get("type") not in ("function", "allowed_tools", *HOSTED_WEB_SEARCH):
            raise unsupported("tool_choice", f"tool_choice of type '{choice.get('type')}'", self.name)
        if req.top_logprobs:
            raise unsupported("top_logprobs", "Logprobs", self.name)
        if parsed.wants("message.output_text.logprobs"):
            raise unsupported("include", "Logprobs", self.name)
        for i, item in enumerate(parsed.items):
            if item["type"] not in SUPPORTED_ITEMS:
                raise unsupported(f"input[{i}]", f"An {item['type']} input item", self.name)
        fmt = req.text.format if req.text is not None else None
        if (fmt and fmt.get("type") == "json_schema" and self.config.options.get("structured_output") == "tool"
                and any(t.get("name") == fmt["name"] for t in req.tools or ())):
            raise InvalidRequest(f"text.format.name '{fmt['name']}' collides with a function tool of that name.",
                                 param="text.format.name", code="invalid_value")

    def body(self, parsed: CanonicalRequest, model: str, stream: bool) -> tuple[bytes, Plan]:
        flat = self.tools(parsed)
        body, plan = build_body(flat.request, model, stream, self.config.options)
        plan.tools = flat.tools
        return _encode(body), plan

    # --- non-streaming -----------------------------------------------------------------------

    async def create(self, parsed: CanonicalRequest, model: str) -> dict[str, Any]:
        payload, plan = self.body(parsed, model, False)
        data = await self.post_json(self._url, payload, self._headers)
        if not isinstance(data, dict) or data.get("type") == "error":
            raise self._error_in_body(_encode(data), data)
        return MessageTranslator(plan).message(data)

    def _error_in_body(self, raw: bytes, data: Any) -> UpstreamError:
        # An error inside a 200 answer: no HTTP status speaks for it, so its `error.type` decides
        # (see error_from_body); an unknown or missing type is a 502.
        return self.error_from_body(200, raw)

    # --- streaming ---------------------------------------------------------------------------

    async def stream(self, parsed: CanonicalRequest, model: str) -> AsyncIterator[list[Event]]:
        payload, plan = self.body(parsed, model, True)
        resp = await self.post_stream(self._url, payload, self._headers)
        try:
            translator = MessageTranslator(plan)
            started = False

            def translate(blocks: list[tuple[str | None, bytes]], batch: list[Event]) -> None:
                nonlocal started
                for _, data in blocks:
                    event = _decode(data)
                    if not started:
                        if event.get("type") == "error":
                            # Refused before anything was produced (overloaded at start): an upstream
                            # error, so that routing can still try another route.
                            raise self._error_in_body(data, event)
                        started = True
                    batch += translator.feed(event)
                    if translator.done:
                        break
                return

            async for batch in self.sse_batches(resp, translate, lambda: translator.done):
                yield batch
            if started:
                tail = translator.finish()
                if tail:
                    yield tail
        finally:
            await resp.aclose()

    # --- errors ------------------------------------------------------------------------------

    def error_from_body(self, status: int, body: bytes, retry_after: str | None = None) -> UpstreamError:
        """Anthropic's `{"type":"error","error":{"type","message"}}` in OpenAI's shape and statuses.

        The HTTP status comes first: it is what the upstream (or a proxy in front of it) decided,
        and it decides failover; a body saying `authentication_error` in a 500 is still a 500. The
        body's `error.type` gives the status only when there is no informative one: an error
        inside a 200 answer or stream (`status` < 400).
        """
        message, kind, _, _ = self.parse_error_body(body)
        kind = kind or _STATUS_TYPES.get(status)
        mapped = _ERRORS.get(kind or "")
        # 529 is Anthropic's own "overloaded"; clients and proxies know 503.
        client_status = 503 if status == 529 else status
        if status < 400:
            client_status = mapped[0] if mapped else 502
        exc = super().error_from_body(client_status, body, retry_after)
        if mapped is not None and mapped[0] == client_status:
            # The type agrees with the status: its OpenAI type and code are the precise ones.
            exc.type = mapped[1]
            exc.code = mapped[2] or exc.code
        else:
            exc.type = status_error_type(client_status)
        if not message:
            exc.message = f"{self.name}: HTTP {status}" if status >= 400 else f"{self.name}: {kind or 'error'}"
        return exc


class _Block:
    """One content block being received."""

    __slots__ = ("citations", "data", "held", "id", "kind", "name", "parts", "signature", "start", "streamed")

    def __init__(self, kind: str, block: dict[str, Any]) -> None:
        self.kind = kind
        self.id: str = block.get("id") or ""
        self.name: str = block.get("name") or ""
        self.parts: list[str] = []  # text / thinking / JSON input pieces
        self.signature: str = block.get("signature") or ""
        self.data: dict[str, Any] = block
        self.citations: list[dict[str, Any]] = []
        self.start = 0  # characters of text this block added (citations cover exactly those)
        self.streamed = False  # tool input arrived as deltas (not whole in the start block)
        self.held = False  # text held back as a possible preamble of the structured-output tool


class MessageTranslator:
    """Anthropic message events -> Responses events and the result part of a Response."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.builder = ResponseEventBuilder(plan.tools)
        self.blocks: dict[int, _Block] = {}
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.stop_details: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.done = False
        self.started = False
        self._server_calls: dict[str, dict[str, Any]] = {}  # server/mcp tool_use id -> use block
        # Structured output through the forced tool: text before its call is preamble (dropped).
        self._preamble = HeldPreamble(plan.json_tool is not None)
        self._thinking_chars = 0  # characters of thinking text, for the reasoning-token estimate

    # --- whole message (non-streaming) ---------------------------------------------------------

    def message(self, data: dict[str, Any]) -> dict[str, Any]:
        self.started = True
        self._merge_usage(data.get("usage"))
        blocks = data.get("content") or ()
        truncated = data.get("stop_reason") in _INCOMPLETE
        for index, block in enumerate(blocks):
            self._start(index, block)
            if truncated and index == len(blocks) - 1 and self.blocks[index].kind == "tool_use":
                # The call was cut off: left open, so that finish() marks it incomplete (as in a stream).
                self.builder.tool_call_arguments(index, _json(block.get("input")))
                continue
            self._stop(index)
        self.stop_reason = data.get("stop_reason") or "end_turn"
        self.stop_details = data.get("stop_details")
        events = self.finish()
        return events[-1]["response"]

    # --- events --------------------------------------------------------------------------------

    def feed(self, event: dict[str, Any]) -> list[Event]:
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._delta(event.get("index", 0), event.get("delta") or {})
        if kind == "content_block_start":
            return self._start(event.get("index", 0), event.get("content_block") or {})
        if kind == "content_block_stop":
            return self._stop(event.get("index", 0))
        if kind == "message_start":
            if not self.started:  # a repeated message_start (seen in the wild) changes nothing
                self.started = True
                self._merge_usage((event.get("message") or {}).get("usage"))
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            if delta.get("stop_reason"):
                self.stop_reason = delta["stop_reason"]
                self.stop_details = delta.get("stop_details")
            self._merge_usage(event.get("usage"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            err = event.get("error")
            self.error = err if isinstance(err, dict) else {"message": str(err)}
            self.done = True
        return []  # ping and unknown events

    def _merge_usage(self, usage: dict[str, Any] | None) -> None:
        # message_delta repeats (and may correct) message_start's counts; the latest non-null wins.
        if usage:
            for key, value in usage.items():
                if value is not None:
                    self.usage[key] = value

    def _start(self, index: int, block: dict[str, Any]) -> list[Event]:
        kind = block.get("type") or ""
        if kind == "tool_use" and block.get("name") == self.plan.json_tool:
            kind = "json_tool"
        state = self.blocks[index] = _Block(kind, block)
        builder = self.builder
        if kind == "text":
            state.citations.extend(block.get("citations") or ())
            return self._text(state, block.get("text") or "")
        if kind == "thinking":
            return self._thinking(block.get("thinking") or "")
        if kind == "json_tool":
            self._preamble.answered()
            return []
        if kind == "tool_use":
            return builder.tool_call_start(index, block.get("id") or new_id("call"), block.get("name") or "")
        if kind == "web_search_tool_result":
            return builder.item(self._web_search_call(block))
        if kind == "mcp_tool_result":
            return builder.item(self._mcp_call(block))
        if kind in _CODE_RESULTS:
            return builder.item(self._code_call(block))
        return []

    def _text(self, state: _Block, delta: str) -> list[Event]:
        if state.kind == "text" and delta and self._preamble.holds(delta):
            state.held = True
            return []
        state.start += len(delta)
        return self.builder.text(delta)

    def _thinking(self, text: str) -> list[Event]:
        if not text:
            return []
        self._thinking_chars += len(text)
        # Shown only when the client asked for a summary (OpenAI shows none otherwise); the text
        # is still sealed into encrypted_content with the signature.
        return self.builder.reasoning_summary(text) if self.plan.summary else []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[Event]:
        state = self.blocks.get(index)
        if state is None:
            return []
        kind = delta.get("type")
        if kind == "text_delta":
            return self._text(state, delta.get("text") or "") if state.kind == "text" else []
        if kind == "input_json_delta":
            piece = delta.get("partial_json") or ""
            if not piece:
                return []
            state.streamed = True
            if state.kind == "tool_use":
                return self.builder.tool_call_arguments(index, piece)
            if state.kind == "json_tool" and not self.plan.json_wrapped:
                return self._text(state, piece)
            state.parts.append(piece)  # server tools, wrapped JSON: needed whole at the stop
            return []
        if kind == "thinking_delta":
            text = delta.get("thinking") or ""
            if not text:
                return []
            state.parts.append(text)
            return self._thinking(text)
        if kind == "signature_delta":
            state.signature += delta.get("signature") or ""
        elif kind == "citations_delta" and delta.get("citation"):
            state.citations.append(delta["citation"])
        return []  # compaction_delta and unknown deltas

    def _stop(self, index: int) -> list[Event]:
        state = self.blocks.get(index)
        if state is None:
            return []
        kind = state.kind
        builder = self.builder
        if kind == "text":
            return self._annotations(state)
        if kind == "thinking":
            return self._end_thinking(state)
        if kind == "redacted_thinking":
            if not self.plan.encrypted:
                return []  # nothing readable, and the client did not ask for the state
            sealed = seal(PROTOCOL, {"type": "redacted_thinking", "data": state.data.get("data") or ""})
            return builder.reasoning_signature(sealed) + builder.end_reasoning()
        if kind == "tool_use":
            events = [] if state.streamed else builder.tool_call_arguments(index, _json(state.data.get("input")))
            return events + builder.end_tool_call(index)
        if kind == "json_tool":
            return self._end_json_tool(state)
        if kind in ("server_tool_use", "mcp_tool_use"):
            # The call's input is needed when its result block arrives.
            state.data = {**state.data, "input": _parse(state.parts) if state.streamed else state.data.get("input")}
            self._server_calls[state.id] = state.data
        return []

    def _end_thinking(self, state: _Block) -> list[Event]:
        builder = self.builder
        events: list[Event] = []
        if self.plan.encrypted:
            text = "".join(state.parts) if state.parts else state.data.get("thinking") or ""
            events += builder.reasoning_signature(
                seal(PROTOCOL, {"type": "thinking", "thinking": text, "signature": state.signature}))
        return events + builder.end_reasoning()

    def _end_json_tool(self, state: _Block) -> list[Event]:
        if state.streamed and not self.plan.json_wrapped:
            return []  # already streamed as text
        value = _parse(state.parts) if state.streamed else state.data.get("input")
        if self.plan.json_wrapped and isinstance(value, dict):
            value = value.get("value")
        return self._text(state, _json(value))

    def _annotations(self, state: _Block) -> list[Event]:
        if not state.citations or state.held:
            return []
        # The block's text ends the open output_text part (blocks arrive one after the other), and
        # a citation covers its whole block.
        last = self.builder.output[-1] if self.builder.output else None
        if last is None or last["type"] != "message" or not last["content"] or "text" not in last["content"][-1]:
            return []
        end = len(last["content"][-1]["text"])
        events: list[Event] = []
        for citation in state.citations:
            if citation.get("type") == "web_search_result_location" and citation.get("url"):
                events += self.builder.annotation({
                    "type": "url_citation", "url": citation["url"], "title": citation.get("title") or "",
                    "start_index": end - state.start, "end_index": end})
        return events

    def _web_search_call(self, block: dict[str, Any]) -> dict[str, Any]:
        use = self._server_calls.get(block.get("tool_use_id") or "") or {}
        query = (use.get("input") or {}).get("query")
        content = block.get("content")
        failed = not isinstance(content, list)
        action: dict[str, Any] = {"type": "search", "query": query if isinstance(query, str) else ""}
        if self.plan.sources and not failed:
            action["sources"] = [{"type": "url", "url": r["url"]} for r in content if r.get("url")]
        return {"id": new_id("ws"), "type": "web_search_call", "status": "failed" if failed else "completed",
                "action": action}

    def _code_call(self, block: dict[str, Any]) -> dict[str, Any]:
        """A code execution result (Python, bash or file edit) -> a code_interpreter_call item."""
        use = self._server_calls.get(block.get("tool_use_id") or "") or {}
        args = use.get("input") if isinstance(use.get("input"), dict) else {}
        code = args.get("code") or args.get("command")
        if use.get("name") == "text_editor_code_execution":
            code = " ".join(str(args[key]) for key in ("command", "path") if args.get(key))
        content = block.get("content") if isinstance(block.get("content"), dict) else {}
        failed = content.get("type", "").endswith("_error") or (content.get("return_code") or 0) != 0
        logs = (content.get("stdout") or "") + (content.get("stderr") or "")
        if content.get("type", "").endswith("_error"):
            logs = f"error: {content.get('error_code') or 'unknown'}"
        if not logs and isinstance(content.get("content"), str):  # a text editor's view
            logs = content["content"]
        return {"id": new_id("ci"), "type": "code_interpreter_call", "status": "failed" if failed else "completed",
                "code": code if isinstance(code, str) else "", "container_id": "anthropic",
                "outputs": [{"type": "logs", "logs": logs}] if logs else []}

    def _mcp_call(self, block: dict[str, Any]) -> dict[str, Any]:
        use = self._server_calls.get(block.get("tool_use_id") or "") or {}
        content = block.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text") or "" for part in content if isinstance(part, dict))
        return {"id": new_id("mcp"), "type": "mcp_call", "server_label": use.get("server_name") or "",
                "name": use.get("name") or "", "arguments": _json(use.get("input")),
                "output": content if isinstance(content, str) else None,
                "status": "failed" if block.get("is_error") else "completed"}

    # --- end -----------------------------------------------------------------------------------

    def finish(self) -> list[Event]:
        if self.error is not None:
            kind = self.error.get("type") or "upstream_error"
            code = _ERRORS[kind][2] if kind in _ERRORS else None
            return [{"type": "error", "code": code or kind,
                     "message": self.error.get("message") or "upstream error", "param": None}]
        if self.stop_reason is None:
            return []  # the upstream cut the stream short; the gateway reports the failure
        builder = self.builder
        held = self._preamble.release()
        # The answer tool was not called: the held text is the answer.
        events: list[Event] = builder.text(held) if held else []
        if self.stop_reason == "refusal":
            # A refusal is the model's answer: a refusal part, status completed (as OpenAI does).
            details = self.stop_details or {}
            events += builder.refusal(details.get("explanation") or _REFUSAL)
        incomplete = self.stop_reason in _INCOMPLETE
        events += builder.finish(incomplete=incomplete)
        result: dict[str, Any] = {"status": "incomplete" if incomplete else "completed", "output": builder.output,
                                  "usage": self.canonical_usage()}
        if incomplete:
            result["incomplete_details"] = {"reason": _INCOMPLETE[self.stop_reason]}
        events.append({"type": "response.incomplete" if incomplete else "response.completed", "response": result})
        return events

    def canonical_usage(self) -> dict[str, Any]:
        usage = self.usage
        read = usage.get("cache_read_input_tokens") or 0
        written = usage.get("cache_creation_input_tokens") or 0
        # Anthropic's input_tokens excludes cache reads and writes; the canonical count includes them.
        prompt = (usage.get("input_tokens") or 0) + read + written
        output = usage.get("output_tokens") or 0
        thinking = (usage.get("output_tokens_details") or {}).get("thinking_tokens")
        if not isinstance(thinking, int):
            # Not reported: estimated from the thinking text (Claude 4 shows a summary of its
            # thinking, so the count it bills is usually higher).
            thinking = estimate_reasoning_tokens(self._thinking_chars, output)
        hour = (usage.get("cache_creation") or {}).get("ephemeral_1h_input_tokens") or 0
        canonical: dict[str, Any] = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": read, "cached_tokens_created": written,
                                     "cache_write_1h_tokens": hour},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": thinking},
            "total_tokens": prompt + output,
        }
        searches = (usage.get("server_tool_use") or {}).get("web_search_requests")
        if searches:
            canonical["tool_calls"] = {"web_search": searches}
        return canonical


def _json(value: Any) -> str:
    return _encode(value if value is not None else {}).decode()


def _parse(parts: list[str]) -> Any:
    try:
        return _decode("".join(parts)) if parts else {}
    except msgspec.DecodeError:
        return {}
