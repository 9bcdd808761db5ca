"""Chat Completions upstream (`type: openai-chat`): OpenAI and every compatible server.

Requests become `messages`; answers and streams become Responses output items and the exact
Responses event sequence, built by `ResponseEventBuilder`. Streams and whole answers go through
the same `ChunkTranslator` (a whole answer is fed as one chunk), so the two cannot drift apart.
Only the first choice is used: the Responses API has no `n`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from yarl import URL

from sluice.canonical.ids import new_id
from sluice.canonical.request import CanonicalRequest
from sluice.canonical.stream import ResponseEventBuilder
from sluice.canonical.texts import part_text
from sluice.canonical.tools import ToolMap
from sluice.config import ProviderConfig
from sluice.errors import UpstreamError
from sluice.providers.base import Adapter, Event, failed_tool_output, unsupported
from sluice.providers.transport import UpstreamClient

_encode = msgspec.json.encode
_decode = msgspec.json.decode

_FINISH = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}


class OpenAIChatAdapter(Adapter):
    def __init__(self, name: str, config: ProviderConfig, client: UpstreamClient | None = None) -> None:
        super().__init__(name, config, client)
        self._url = f"{(config.base_url or 'https://api.openai.com/v1').rstrip('/')}/chat/completions"
        self._headers = {"content-type": "application/json", **config.headers}
        if config.api_key:
            self._headers["authorization"] = f"Bearer {config.api_key}"

    # --- request -----------------------------------------------------------------------------

    @property
    def native_custom_tools(self) -> bool:  # type: ignore[override]
        """Chat Completions has custom tools, but few servers besides OpenAI's own know them.

        Option `custom_tools`: `native` (sent as `{type: custom}`), `function` (flattened into a
        function taking `input`), or `auto` (the default: native on OpenAI's own endpoint only).
        """
        mode = self.config.options.get("custom_tools", "auto")
        if mode == "auto":
            base = self.config.base_url
            return base is None or URL(base).host == "api.openai.com"
        return mode == "native"

    def check(self, parsed: CanonicalRequest, model: str) -> None:
        parsed = self.tools(parsed).request  # namespaces flattened, unsupported hosted tools dropped
        kinds = ("function", "custom")
        for i, tool in enumerate(parsed.req.tools or ()):
            if tool.get("type") not in kinds:
                raise unsupported(f"tools[{i}].type", f"The '{tool.get('type')}' tool", self.name)
        choice = parsed.req.tool_choice
        if isinstance(choice, dict) and choice.get("type") not in ("function", "custom", "allowed_tools"):
            raise unsupported("tool_choice", f"tool_choice of type '{choice.get('type')}'", self.name)
        for i, item in enumerate(parsed.items):
            if item["type"] == "item_reference":
                raise unsupported(f"input[{i}]", "An item_reference input", self.name)

    def body(self, parsed: CanonicalRequest, model: str, stream: bool) -> dict[str, Any]:
        return self._body(self.tools(parsed).request, model, stream)

    def _body(self, parsed: CanonicalRequest, model: str, stream: bool) -> dict[str, Any]:
        """The request body of a request whose tools are flattened already (`self.tools`)."""
        req = parsed.req
        body: dict[str, Any] = {"model": model, "messages": to_messages(parsed)}
        if stream:
            body["stream"] = True
            # Mistral rejects `stream_options` (422 extra_forbidden) and sends usage anyway.
            if self.config.options.get("stream_options", True):
                body["stream_options"] = {"include_usage": True}
        if req.max_output_tokens is not None:
            body[self.config.options.get("max_tokens_param", "max_completion_tokens")] = req.max_output_tokens
        for name in ("temperature", "top_p", "user", "frequency_penalty", "presence_penalty"):
            value = getattr(req, name)
            if value is not None:
                body[name] = value
        tools, choice = _allowed(req.tools, req.tool_choice, self.config.options.get("allowed_tools") == "native")
        if tools:
            body["tools"] = [_tool(tool) for tool in tools]
            if req.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = req.parallel_tool_calls
            if choice is not None:
                body["tool_choice"] = choice
        if req.text is not None:
            fmt = req.text.format
            if fmt and fmt.get("type") == "json_schema":
                schema = {"name": fmt["name"], "schema": fmt["schema"]}
                for key in ("strict", "description"):
                    if key in fmt:
                        schema[key] = fmt[key]
                body["response_format"] = {"type": "json_schema", "json_schema": schema}
            elif fmt and fmt.get("type") == "json_object":
                body["response_format"] = {"type": "json_object"}
            if req.text.verbosity is not None:
                body["verbosity"] = req.text.verbosity
        if req.reasoning is not None and req.reasoning.effort is not None:
            body["reasoning_effort"] = req.reasoning.effort
        if parsed.wants("message.output_text.logprobs") or req.top_logprobs:
            body["logprobs"] = True
            if req.top_logprobs:
                body["top_logprobs"] = req.top_logprobs
        if self.config.options.get("prompt_cache_key") and req.prompt_cache_key:
            body["prompt_cache_key"] = req.prompt_cache_key
        extra = self.config.options.get("extra_body")
        if isinstance(extra, dict):
            body.update(extra)
        return body

    # --- non-streaming -----------------------------------------------------------------------

    async def create(self, parsed: CanonicalRequest, model: str) -> dict[str, Any]:
        flat = self.tools(parsed)
        data = await self.post_json(self._url, _encode(self._body(flat.request, model, False)), self._headers)
        if isinstance(data, dict) and data.get("error"):
            raise self.error_from_body(502, _encode(data))
        if not _is_completion(data):
            # A 200 that is not a chat completion (a proxy's page, another API's body): unreadable,
            # this route failed. Not an empty "completed" answer.
            raise self.unreadable("an answer that is not a chat completion (no `choices`)")
        return from_completion(data, flat.tools, summary=_wants_summary(parsed))

    # --- streaming ---------------------------------------------------------------------------

    async def stream(self, parsed: CanonicalRequest, model: str) -> AsyncIterator[list[Event]]:
        flat = self.tools(parsed)
        resp = await self.post_stream(self._url, _encode(self._body(flat.request, model, True)), self._headers)
        translator = ChunkTranslator(flat.tools, summary=_wants_summary(parsed))

        def translate(blocks: list[tuple[str | None, bytes]], batch: list[Event]) -> None:
            for _, data in blocks:
                if data == b"[DONE]":
                    translator.done = True
                    break
                batch += translator.feed(_decode(data))
            return

        try:
            async for batch in self.sse_batches(resp, translate, lambda: translator.done):
                yield batch
            if not translator.answered and translator.error is None and (translator.chunks or translator.done):
                # Chunks (usage, keep-alives, [DONE]) but never a choice: nothing in it is an answer.
                raise self.unreadable("a stream without any chat completion choice")
            tail = translator.finish()
            if tail:
                yield tail
        finally:
            await resp.aclose()

    def unreadable(self, what: str) -> UpstreamError:
        """A 200 answer that is not what the protocol sends: this route's failure (502), the next is tried."""
        return UpstreamError(f"{self.name}: the upstream answered with {what}", provider=self.name,
                             retryable=True, status=502, code="upstream_invalid_response")


class ChunkTranslator:
    """Chat completion chunks (or a whole completion, as one chunk) -> Responses events and output.

    `tools`: the names flattened namespace / custom tools had on the wire, to map calls back.
    `summary`: the client asked for `reasoning.summary`, so the server's reasoning text
    (`reasoning_content`, Mistral thinking) is shown as `summary_text`; otherwise as raw
    `reasoning_text` content, as OpenAI shows an open model's reasoning.
    """

    def __init__(self, tools: ToolMap | None = None, *, summary: bool = False) -> None:
        self.builder = ResponseEventBuilder(tools)
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.error: dict[str, Any] | None = None
        self.done = False  # the upstream said `data: [DONE]`: the stream ended on purpose
        self.chunks = 0  # chunks read
        self.answered = False  # a chunk carried a choice: this is a chat completion
        self.summary = summary
        self._last_call: Any = None

    def _reasoning(self, text: str) -> list[Event]:
        return self.builder.reasoning_summary(text) if self.summary else self.builder.reasoning_text(text)

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        self.chunks += 1
        if not isinstance(chunk, dict):
            return events  # not a chunk; a stream of nothing else is unreadable (see `answered`)
        if chunk.get("error"):
            err = chunk["error"]
            self.error = err if isinstance(err, dict) else {"message": str(err)}
            return events
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            self.answered = True
            delta = choice.get("delta") or {}
            builder = self.builder
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and isinstance(reasoning, str):
                events += self._reasoning(reasoning)
            content = delta.get("content")
            logprobs = _logprobs(choice.get("logprobs"))
            if isinstance(content, list):  # Mistral: [{type: thinking, thinking: [...]}, {type: text}]
                for kind, text in _content_chunks(content):
                    events += self._reasoning(text) if kind == "thinking" else builder.text(text)
                content = None
            if content or logprobs:
                events += builder.text(content or "", logprobs)
            for annotation in delta.get("annotations") or ():
                converted = _annotation(annotation)
                if converted is not None:
                    events += builder.annotation(converted)
            if delta.get("refusal"):
                events += builder.refusal(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                key = self._call_key(call)
                custom = call.get("custom")
                if isinstance(custom, dict) or call.get("type") == "custom":
                    # A native custom tool call: `custom: {name, input}` (input pieces when streamed).
                    custom = custom if isinstance(custom, dict) else {}
                    if not builder.has_call(key):
                        events += builder.custom_tool_call_start(key, call.get("id") or new_id("call"),
                                                                 custom.get("name") or "")
                    events += builder.custom_tool_call_input(key, custom.get("input") or "")
                    continue
                function = call.get("function") or {}
                if not builder.has_call(key):
                    events += builder.tool_call_start(key, call.get("id") or new_id("call"),
                                                      function.get("name") or "")
                events += builder.tool_call_arguments(key, function.get("arguments") or "")
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def completion(self, data: dict[str, Any]) -> dict[str, Any]:
        """A whole (non-streaming) completion -> the result part of a Response.

        Its message is fed as the delta of one chunk, so it takes exactly the path a stream takes.
        """
        choices = data.get("choices") or []
        choice = next((c for c in choices if c.get("index", 0) == 0), choices[0] if choices else {})
        message = choice.get("message") or {}
        # Whole tool calls carry no `index`: number them, so calls without an id stay apart.
        calls = [{**call, "index": i} for i, call in enumerate(message.get("tool_calls") or ())]
        self.feed({"usage": data.get("usage"), "choices": [{
            "index": 0, "delta": {**message, "tool_calls": calls}, "logprobs": choice.get("logprobs"),
            "finish_reason": choice.get("finish_reason")}]})
        self.done = True  # a whole answer is complete, with or without a finish_reason
        return self.finish()[-1]["response"]

    def _call_key(self, call: dict[str, Any]) -> Any:
        # OpenAI numbers tool calls with `index` and repeats it on every fragment. Mistral sends
        # each call whole, without `index`: its id tells calls apart (several may share a chunk).
        if "index" in call:
            key = call["index"]
        elif call.get("id"):
            key = ("id", call["id"])
        else:
            key = self._last_call if self._last_call is not None else 0
        self._last_call = key
        return key

    def finish(self) -> list[Event]:
        if self.error is not None:
            return [{"type": "error", "code": self.error.get("code") or "upstream_error",
                     "message": self.error.get("message") or "upstream error", "param": None}]
        if self.finish_reason is None and not self.done:
            # Neither a finish_reason nor [DONE]: the upstream cut the stream short.
            return []
        incomplete = _FINISH.get(self.finish_reason)
        events = self.builder.finish(incomplete=incomplete is not None)
        result: dict[str, Any] = {"status": "incomplete" if incomplete else "completed",
                                  "output": self.builder.output, "usage": usage_from_chat(self.usage)}
        if incomplete:
            result["incomplete_details"] = {"reason": incomplete}
        events.append({"type": "response.incomplete" if incomplete else "response.completed", "response": result})
        return events


# --- translation helpers -----------------------------------------------------------------------


def to_messages(parsed: CanonicalRequest) -> list[dict[str, Any]]:
    """Responses input items -> chat messages; consecutive assistant pieces merge into one message."""
    messages: list[dict[str, Any]] = []
    if parsed.req.instructions:
        messages.append({"role": "system", "content": parsed.req.instructions})
    for item in parsed.items:
        kind = item["type"]
        if kind == "message":
            role = item["role"]
            if role == "assistant":
                text = "".join(part_text(p) or "" for p in item["content"]
                               if p.get("type") in ("output_text", "refusal", "input_text"))
                last = messages[-1] if messages else None
                if last is not None and last["role"] == "assistant" and "tool_calls" not in last:
                    last["content"] = (last.get("content") or "") + text
                else:
                    messages.append({"role": "assistant", "content": text})
            else:
                messages.append({"role": "system" if role == "developer" else role,
                                 "content": _content(item["content"], role)})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "custom_tool_call":  # native custom tools (otherwise flattened into function calls)
            call = {"id": item["call_id"], "type": "custom", "custom": {"name": item["name"], "input": item["input"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = item["output"]
            if isinstance(output, list):
                output = "".join(part_text(p) or "" for p in output if isinstance(p, dict))
            if item.get("is_error"):
                output = failed_tool_output(output)  # Chat has no error flag: the text says it
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
        # Reasoning items carry another provider's opaque state; chat servers cannot take it back.
    return messages


def _content(parts: list[dict[str, Any]], role: str) -> str | list[dict[str, Any]]:
    if all(p.get("type") in ("input_text", "output_text") for p in parts):
        text = "".join(p["text"] for p in parts)
        if role == "system" or len(parts) <= 1:
            return text
    converted = []
    for part in parts:
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            converted.append({"type": "text", "text": part["text"]})
        elif kind == "input_image":
            image = {"url": part.get("image_url") or part.get("file_id")}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            converted.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k)}
            converted.append({"type": "file", "file": file})
    return converted


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool["type"] == "custom":
        custom: dict[str, Any] = {"name": tool["name"]}
        if tool.get("description"):
            custom["description"] = tool["description"]
        fmt = tool.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "grammar":
            custom["format"] = {"type": "grammar", "grammar": {"definition": fmt.get("definition"),
                                                               "syntax": fmt.get("syntax")}}
        elif isinstance(fmt, dict) and fmt.get("type") == "text":
            custom["format"] = {"type": "text"}
        return {"type": "custom", "custom": custom}
    function: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _allowed(tools: list[dict[str, Any]] | None, choice: str | dict[str, Any] | None, native: bool,
             ) -> tuple[list[dict[str, Any]], str | dict[str, Any] | None]:
    """The tools to send and the chat `tool_choice`.

    `allowed_tools` is enforced: by default only the allowed tools are sent, with the mode's
    `auto` / `required` (every Chat-compatible server takes that); with `options.allowed_tools:
    native` every tool is sent with Chat's own `{"type": "allowed_tools", "allowed_tools": {mode,
    tools}}` choice (OpenAI: the tool list, and so the prompt cache, stays the same across turns).
    """
    tools = tools or []
    if not isinstance(choice, dict):
        return tools, choice
    kind = choice.get("type")
    if kind != "allowed_tools":  # one named tool: {"type": "function", "function": {"name": ...}}
        return tools, {"type": kind, kind: {"name": choice.get("name")}}
    mode = "required" if choice.get("mode") == "required" else "auto"
    wanted = {(ref.get("type"), ref.get("name")) for ref in choice.get("tools") or ()}
    allowed = [tool for tool in tools if (tool.get("type"), tool.get("name")) in wanted]
    if not native:
        return allowed, mode
    if not allowed:
        return tools, "none"  # nothing may be called
    refs = [{"type": tool["type"], tool["type"]: {"name": tool["name"]}} for tool in allowed]
    return tools, {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": refs}}


def _logprobs(logprobs: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not logprobs or not logprobs.get("content"):
        return []
    return [
        {"token": t["token"], "logprob": t["logprob"], "bytes": t.get("bytes") or list(t["token"].encode()),
         "top_logprobs": [{"token": a["token"], "logprob": a["logprob"],
                           "bytes": a.get("bytes") or list(a["token"].encode())}
                          for a in t.get("top_logprobs") or ()]}
        for t in logprobs["content"]
    ]


def usage_from_chat(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    cached = prompt_details.get("cached_tokens") or usage.get("prompt_cache_hit_tokens") or 0
    return {
        "input_tokens": usage.get("prompt_tokens") or 0,
        "input_tokens_details": {"cached_tokens": cached,
                                 "cached_tokens_created": prompt_details.get("cache_write_tokens") or 0},
        "output_tokens": usage.get("completion_tokens") or 0,
        "output_tokens_details": {"reasoning_tokens": completion_details.get("reasoning_tokens") or 0},
        "total_tokens": usage.get("total_tokens") or 0,
    }


def from_completion(data: dict[str, Any], tools: ToolMap | None = None, *, summary: bool = False) -> dict[str, Any]:
    """A non-streaming chat completion -> the result part of a Response (see `ChunkTranslator.completion`)."""
    return ChunkTranslator(tools, summary=summary).completion(data)


def _is_completion(data: Any) -> bool:
    """A chat completion body: an object whose `choices` list holds at least one choice."""
    choices = data.get("choices") if isinstance(data, dict) else None
    return isinstance(choices, list) and any(isinstance(choice, dict) for choice in choices)


def _wants_summary(parsed: CanonicalRequest) -> bool:
    reasoning = parsed.req.reasoning
    return reasoning is not None and (reasoning.summary or reasoning.generate_summary) is not None


def _content_chunks(content: list[Any]) -> list[tuple[str, str]]:
    """Mistral's content array as ("thinking" | "text", text) pieces, in order."""
    pieces: list[tuple[str, str]] = []
    for chunk in content:
        if not isinstance(chunk, dict):
            continue
        if chunk.get("type") == "thinking":
            inner = chunk.get("thinking")
            if isinstance(inner, str):
                pieces.append(("thinking", inner))
            else:
                text = "".join(p["text"] for p in inner if isinstance(p, dict) and isinstance(p.get("text"), str)) \
                    if isinstance(inner, list) else ""
                pieces.append(("thinking", text))
        elif chunk.get("type") == "text" and isinstance(chunk.get("text"), str):
            pieces.append(("text", chunk["text"]))
    return [(kind, text) for kind, text in pieces if text]


def _annotation(annotation: dict[str, Any]) -> dict[str, Any] | None:
    if annotation.get("type") == "url_citation":
        cite = annotation.get("url_citation") or annotation
        return {"type": "url_citation", "url": cite.get("url", ""), "title": cite.get("title", ""),
                "start_index": cite.get("start_index", 0), "end_index": cite.get("end_index", 0)}
    return None
