"""Google Gemini upstream (`type: gemini`): `models/{model}:generateContent` and `:streamGenerateContent`.

Requests become `contents` (user/model turns, consecutive same-role turns merged), a
`systemInstruction`, `functionDeclarations` and a `generationConfig`; answers and SSE chunks
become Responses output items through `ResponseEventBuilder`. Both paths share one translator
(`GeminiTranslator`), so a stream's final response and the non-streaming body cannot drift apart.

Thought signatures: Gemini hands back an opaque `thoughtSignature` on some parts (always on the
first function call of a Gemini 3 step, which it requires back). Sluice seals them into the
`encrypted_content` of a reasoning item (`sluice1.gemini.…`, see `canonical/reasoning.py`) placed
next to the part they belong to; a client that round-trips output items as input gives them back.
The sealed state is `{"m": model, "g": [entry, ...]}` where an entry is `{"s": sig, "c": call_id}`
(bound to that function call wherever it is), `{"s": sig, "a": "n"}` (the next model part) or
`{"s": sig, "a": "p"}` (the previous model part, for the signature Gemini streams after the text).
docs/providers.md has the field-by-field mapping.
"""

from __future__ import annotations

import base64
import itertools
import math
import mimetypes
import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from sluice.canonical.ids import new_id
from sluice.canonical.reasoning import seal, unseal
from sluice.canonical.request import ParsedRequest
from sluice.canonical.stream import ResponseEventBuilder
from sluice.config import ProviderConfig
from sluice.errors import InvalidRequest, UpstreamError, status_error_type
from sluice.providers.base import RETRYABLE, Adapter, Event, unsupported
from sluice.providers.gemini_schema import to_openapi_schema
from sluice.providers.sse import SSEDecoder
from sluice.providers.transport import NetworkError, UpstreamClient, UpstreamResponse

_encode = msgspec.json.encode
_decode = msgspec.json.decode

PROTOCOL = "gemini"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
# Google's documented stand-in for a missing signature (history from another model, or a client
# that dropped reasoning items): Gemini 3 rejects a function call turn without any signature.
DUMMY_SIGNATURE = base64.b64encode(b"skip_thought_signature_validator").decode()

_INCOMPLETE = {
    "MAX_TOKENS": "max_output_tokens",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}
_COMPLETED = frozenset({"STOP", "FINISH_REASON_UNSPECIFIED"})
_GOOGLE_STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ABORTED": 409, "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "UNKNOWN": 500, "INTERNAL": 500, "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}
_ALLOWED_ITEMS = frozenset({"message", "function_call", "function_call_output", "reasoning", "web_search_call",
                            "code_interpreter_call"})
_VERSION = re.compile(r"gemini-(\d+)(?:\.(\d+))?")
_VERSION_SEGMENT = re.compile(r"/v\d+(?:alpha|beta)?\d*(?:/|$)")
# reasoning.effort -> thinkingBudget (Gemini 2.5) and thinkingLevel (Gemini 3+).
_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
_LEVELS = {"none": "MINIMAL", "minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH", "xhigh": "HIGH"}


class GeminiAdapter(Adapter):
    def __init__(self, name: str, config: ProviderConfig, client: UpstreamClient | None = None) -> None:
        super().__init__(name, config, client)
        options = self.config.options
        base = (self.config.base_url or DEFAULT_BASE_URL).rstrip("/")
        # A base_url that already names a version (`.../v1beta`, Vertex's `.../v1/publishers/google`) is kept.
        self.prefix = base if _VERSION_SEGMENT.search(base) else f"{base}/{options.get('api_version') or 'v1beta'}"
        self.openapi_schemas = options.get("schema_mode") == "openapi"
        self.send_call_ids = bool(options.get("function_call_ids", False))
        self._headers = {"content-type": "application/json", **self.config.headers}
        if self.config.api_key:
            self._headers["x-goog-api-key"] = self.config.api_key

    def url(self, model: str, stream: bool) -> str:
        path = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        return f"{self.prefix}/{path}:{'streamGenerateContent?alt=sse' if stream else 'generateContent'}"

    # --- request -----------------------------------------------------------------------------

    def check(self, parsed: ParsedRequest, model: str) -> None:
        for i, tool in enumerate(parsed.req.tools or ()):
            kind = tool.get("type")
            if kind == "function" or kind == "code_interpreter":
                continue
            if isinstance(kind, str) and kind.startswith("web_search"):
                filters = tool.get("filters") or {}
                if filters.get("allowed_domains"):
                    raise unsupported(f"tools[{i}].filters.allowed_domains", "Restricting web search to domains",
                                      self.name)
                continue
            raise unsupported(f"tools[{i}].type", f"The '{kind}' tool", self.name)
        choice = parsed.req.tool_choice
        if isinstance(choice, dict) and choice.get("type") not in ("function", "allowed_tools"):
            raise unsupported("tool_choice", f"tool_choice of type '{choice.get('type')}'", self.name)
        for i, item in enumerate(parsed.items):
            kind = item["type"]
            if kind not in _ALLOWED_ITEMS:
                raise unsupported(f"input[{i}]", f"An input item of type '{kind}'", self.name)
            if kind == "message" and item["role"] in ("system", "developer"):
                for j, part in enumerate(item["content"]):
                    if part.get("type") not in ("input_text", "output_text"):
                        raise unsupported(f"input[{i}].content[{j}]", "Non-text content in a system message",
                                          self.name)

    def body(self, parsed: ParsedRequest, model: str) -> bytes:
        req = parsed.req
        options = self.config.options
        contents, system = self.contents(parsed, model)
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": system}
        if req.tools:
            tools, tool_config = self.tools(parsed)
            if tools:
                body["tools"] = tools
            if tool_config:
                body["toolConfig"] = tool_config
        generation = self.generation_config(parsed, model)
        if generation:
            body["generationConfig"] = generation
        if options.get("safety_settings"):
            body["safetySettings"] = options["safety_settings"]
        extra = options.get("extra_body")
        if isinstance(extra, dict):
            body.update(extra)
        return _encode(body)

    def contents(self, parsed: ParsedRequest, model: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Input items -> (`contents`, `systemInstruction` parts)."""
        history = _History(self, parsed.items, model)
        if parsed.req.instructions:
            history.system.append({"text": parsed.req.instructions})
        for i, item in enumerate(parsed.items):
            kind = item["type"]
            if kind == "message":
                history.message(item, i)
            elif kind == "function_call":
                history.function_call(item, i)
            elif kind == "function_call_output":
                history.function_output(item, i)
            elif kind == "reasoning":
                history.reasoning(i)
            elif kind == "code_interpreter_call":
                history.code(item)
            # web_search_call: Google Search runs inside Gemini; there is nothing to send back.
        if not history.contents:
            raise InvalidRequest("The input has no user or assistant content to send to Gemini.", param="input",
                                 code="invalid_value")
        if self.config.options.get("dummy_thought_signatures", _generation(model) >= 3):
            _add_dummy_signatures(history.contents)
        return history.contents, history.system

    def part(self, part: dict[str, Any], where: str) -> dict[str, Any] | None:
        """A user content part -> a Gemini part (None for empty text)."""
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            return {"text": part["text"]} if part["text"] else None
        if kind == "refusal":
            return {"text": part["refusal"]} if part["refusal"] else None
        if kind == "input_image":
            url = part.get("image_url")
            if isinstance(url, str):
                return self.media(url, where + ".image_url", "image/jpeg")
            return self.file_ref(part["file_id"], where + ".file_id", None)
        if kind == "input_file":
            data = part.get("file_data")
            if isinstance(data, str):
                if data.startswith("data:"):
                    return self.media(data, where + ".file_data", None)
                mime = mimetypes.guess_type(part.get("filename") or "")[0]
                if mime is None:
                    raise InvalidRequest(f"Cannot tell the media type of '{where}.file_data': send a data URL "
                                         "(data:<type>;base64,...) or a filename with a known extension.",
                                         param=f"{where}.file_data", code="invalid_value")
                return {"inlineData": {"mimeType": mime, "data": data}}
            if isinstance(part.get("file_url"), str):
                return self.media(part["file_url"], where + ".file_url", None)
            return self.file_ref(part["file_id"], where + ".file_id", part.get("filename"))
        raise unsupported(f"{where}.type", f"Content of type '{kind}'", self.name)

    def media(self, url: str, where: str, default_mime: str | None) -> dict[str, Any]:
        if url.startswith("data:"):
            header, comma, data = url.partition(",")
            if not comma or not header.endswith(";base64"):
                raise InvalidRequest(f"Invalid '{where}': only base64 data URLs are supported.", param=where,
                                     code="invalid_value")
            return {"inlineData": {"mimeType": header[5:-7] or "application/octet-stream", "data": data}}
        if url.startswith(("files/", "https://generativelanguage.googleapis.com/")):
            return self.file_ref(url, where, None)
        if not url.startswith(("http://", "https://", "gs://")):
            raise InvalidRequest(f"Invalid '{where}': expected a data URL or an http(s) / gs:// URL.", param=where,
                                 code="invalid_value")
        file_data = {"fileUri": url}
        mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or default_mime
        if mime:
            file_data["mimeType"] = mime
        return {"fileData": file_data}

    def file_ref(self, file_id: str, where: str, filename: str | None) -> dict[str, Any]:
        """A Gemini Files API file (`files/abc` or its full URI) -> `fileData`."""
        if file_id.startswith("files/"):
            uri = f"{self.prefix}/{file_id}"
        elif file_id.startswith(("https://", "gs://")):
            uri = file_id
        else:
            raise InvalidRequest(f"Invalid '{where}': Gemini only knows its own files ('files/...' or their URI), "
                                 f"not {file_id!r}.", param=where, code="invalid_value")
        file_data = {"fileUri": uri}
        mime = mimetypes.guess_type(filename or uri.split("?", 1)[0])[0]
        if mime:
            file_data["mimeType"] = mime
        return {"fileData": file_data}

    def function_response(self, item: dict[str, Any], name: str, index: int, nested: bool) -> list[dict[str, Any]]:
        """A function_call_output -> a functionResponse part (plus media parts before Gemini 3)."""
        output = item["output"]
        media: list[dict[str, Any]] = []
        if isinstance(output, list):
            texts = []
            for j, part in enumerate(output):
                if part.get("type") in ("input_text", "output_text"):
                    texts.append(part.get("text") or "")
                else:
                    converted = self.part(part, f"input[{index}].output[{j}]")
                    if converted is not None:
                        media.append(converted)
            output = "".join(texts)
        value: Any = output
        if output[:1] == "{":
            try:
                value = _decode(output)
            except msgspec.DecodeError:
                value = output
        if item.get("is_error"):
            response = {"error": value}
        else:
            response = value if isinstance(value, dict) else {"output": output}
        function_response: dict[str, Any] = {"name": name, "response": response}
        if self.send_call_ids:
            function_response["id"] = item["call_id"]
        if media and nested:
            # Gemini 3 takes images and files inside the function response itself.
            function_response["parts"] = media
            media = []
        return [{"functionResponse": function_response}, *media]

    def tools(self, parsed: ParsedRequest) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        req = parsed.req
        declarations: list[dict[str, Any]] = []
        hosted: dict[str, dict[str, Any]] = {}
        for i, tool in enumerate(req.tools or ()):
            kind = tool["type"]
            if kind == "function":
                declaration: dict[str, Any] = {"name": tool["name"]}
                if tool.get("description"):
                    declaration["description"] = tool["description"]
                params = tool.get("parameters")
                if params is not None:
                    if self.openapi_schemas:
                        declaration["parameters"] = to_openapi_schema(params, f"tools[{i}].parameters")
                    else:
                        declaration["parametersJsonSchema"] = params
                declarations.append(declaration)
            elif kind == "code_interpreter":
                hosted["codeExecution"] = {"codeExecution": {}}
            else:
                hosted["googleSearch"] = {"googleSearch": {}}
        config = None
        choice = req.tool_choice
        if declarations and choice is not None and choice != "auto":
            known = {d["name"] for d in declarations}
            if choice == "none":
                config = {"mode": "NONE"}
            elif choice == "required":
                config = {"mode": "ANY"}
            elif isinstance(choice, dict) and choice["type"] == "function":
                if choice["name"] not in known:
                    raise InvalidRequest(f"tool_choice names the function {choice['name']!r}, which is not in tools.",
                                         param="tool_choice.name", code="invalid_value")
                config = {"mode": "ANY", "allowedFunctionNames": [choice["name"]]}
            elif isinstance(choice, dict):
                allowed = [t.get("name") for t in choice.get("tools") or () if t.get("type") == "function"]
                if choice.get("mode") == "required":
                    config = {"mode": "ANY", "allowedFunctionNames": [n for n in allowed if n in known]}
                else:
                    # AUTO over a subset: declare only the allowed functions.
                    declarations = [d for d in declarations if d["name"] in allowed]
        tools = ([{"functionDeclarations": declarations}] if declarations else []) + list(hosted.values())
        return tools, ({"functionCallingConfig": config} if config else None)

    def generation_config(self, parsed: ParsedRequest, model: str) -> dict[str, Any]:
        req = parsed.req
        config: dict[str, Any] = {}
        if req.max_output_tokens is not None:
            config["maxOutputTokens"] = req.max_output_tokens
        if req.temperature is not None:
            config["temperature"] = req.temperature
        if req.top_p is not None:
            config["topP"] = req.top_p
        if req.frequency_penalty is not None:
            config["frequencyPenalty"] = req.frequency_penalty
        if req.presence_penalty is not None:
            config["presencePenalty"] = req.presence_penalty
        fmt = req.text.format if req.text is not None else None
        if fmt and fmt.get("type") == "json_schema":
            config["responseMimeType"] = "application/json"
            if self.openapi_schemas:
                config["responseSchema"] = to_openapi_schema(fmt["schema"], "text.format.schema")
            else:
                config["responseJsonSchema"] = fmt["schema"]
        elif fmt and fmt.get("type") == "json_object":
            config["responseMimeType"] = "application/json"
        if parsed.wants("message.output_text.logprobs") or req.top_logprobs:
            config["responseLogprobs"] = True
            if req.top_logprobs:
                config["logprobs"] = req.top_logprobs
        thinking = self.thinking_config(parsed, model)
        if thinking:
            config["thinkingConfig"] = thinking
        return config

    def thinking_config(self, parsed: ParsedRequest, model: str) -> dict[str, Any]:
        reasoning = parsed.req.reasoning
        if reasoning is None:
            return {}
        effort = reasoning.effort
        config: dict[str, Any] = {}
        kind = self.config.options.get("thinking") or _thinking_kind(model)
        if effort is not None and kind == "level":
            levels = self.config.options.get("thinking_levels") or {}
            level = levels.get(effort) or _LEVELS[effort]
            if level == "MINIMAL" and "-pro" in model and effort not in levels:
                level = "LOW"  # Gemini 3 Pro has no MINIMAL
            config["thinkingLevel"] = level
        elif effort is not None and kind == "budget":
            budget = _BUDGETS[effort]
            # 2.5 Pro cannot turn thinking off (128 is its floor); 24576 is the Flash models' ceiling.
            config["thinkingBudget"] = max(budget, 128) if "-pro" in model else min(budget, 24576)
        if (effort is not None and effort != "none") or reasoning.summary or reasoning.generate_summary:
            config["includeThoughts"] = True
        return config

    # --- non-streaming -----------------------------------------------------------------------

    async def create(self, parsed: ParsedRequest, model: str) -> dict[str, Any]:
        data = await self.post_json(self.url(model, False), self.body(parsed, model), self._headers)
        self._check_answer(data)
        translator = GeminiTranslator(parsed, model)
        # A JSON array is the non-SSE stream shape; some proxies answer generateContent with it.
        for chunk in data if isinstance(data, list) else (data,):
            if isinstance(chunk, dict):
                translator.feed(chunk)
        events = translator.finish(cut_short_ok=True)
        if not events or events[-1]["type"] == "error":
            detail = events[-1]["message"] if events else "Gemini answered without a candidate."
            raise UpstreamError(f"{self.name}: {detail}", provider=self.name, retryable=True, status=502,
                                code="upstream_error")
        return events[-1]["response"]

    # --- streaming ---------------------------------------------------------------------------

    async def stream(self, parsed: ParsedRequest, model: str) -> AsyncIterator[list[Event]]:
        resp = await self.post_stream(self.url(model, True), self.body(parsed, model), self._headers)
        try:
            translator = GeminiTranslator(parsed, model)
            if "event-stream" not in resp.headers.get("content-type", "text/event-stream"):
                # Without alt=sse (a proxy that drops the query) Gemini streams one JSON array.
                yield await self._json_array(resp, translator)
                return
            yield translator.start()
            decoder = SSEDecoder()
            async for raw in resp.chunks():
                batch: list[Event] = []
                for _, data in decoder.feed(raw):
                    batch += translator.feed_bytes(data)
                if batch:
                    yield batch
                if translator.error is not None:
                    break
            else:
                batch = []
                for _, data in decoder.flush():
                    batch += translator.feed_bytes(data)
                if batch:
                    yield batch
            tail = translator.finish()
            if tail:
                yield tail
        except NetworkError as exc:
            raise self.transport_error(exc) from None
        finally:
            await resp.aclose()

    async def _json_array(self, resp: UpstreamResponse, translator: GeminiTranslator) -> list[Event]:
        try:
            data = _decode(await resp.read())
        except msgspec.DecodeError:
            raise self.invalid_response() from None
        self._check_answer(data)
        events = translator.start()
        for chunk in data if isinstance(data, list) else (data,):
            if isinstance(chunk, dict):
                events += translator.feed(chunk)
        return events + translator.finish()

    # --- errors ------------------------------------------------------------------------------

    def _check_answer(self, data: Any) -> None:
        """Raise the error a 200 answer carries instead of candidates."""
        if isinstance(data, dict) and data.get("error") and not data.get("candidates"):
            raise self.error_from_body(200, _encode(data))

    def error_from_body(self, status: int, body: bytes, retry_after: str | None = None) -> UpstreamError:
        """Google's `{"error": {code, message, status, details}}` -> an OpenAI-shaped error."""
        try:
            data = _decode(body)
        except msgspec.DecodeError:
            data = None
        if isinstance(data, list) and data:
            data = data[0]  # the non-SSE stream wraps errors in an array
        err = data.get("error") if isinstance(data, dict) else None
        if not isinstance(err, dict):
            return super().error_from_body(status, body, retry_after)
        google_status = err.get("status") if isinstance(err.get("status"), str) else None
        if status < 400:  # an error inside a 200 body: its own code says the status
            code = err.get("code")
            status = code if isinstance(code, int) and 400 <= code <= 599 else 502
            status = _GOOGLE_STATUS.get(google_status or "", status) if status == 502 else status
        details = [d for d in err.get("details") or () if isinstance(d, dict)]
        if status == 400 and any(d.get("reason") == "API_KEY_INVALID" for d in details):
            status = 401  # the provider's key, not the client's request: let routing try another route
        if status == 429 and not retry_after:
            retry_after = _retry_delay(details)
        message = err.get("message") or f"HTTP {status}"
        return UpstreamError(
            f"{self.name}: {self.redact_secrets(str(message))}",
            provider=self.name,
            retryable=status in RETRYABLE,
            status=status,
            type=status_error_type(status),
            code=google_status.lower() if google_status else None,
            headers={"retry-after": retry_after} if retry_after and status == 429 else None,
        )


class _History:
    """Input items -> Gemini turns, each sealed signature back on the part it came with."""

    __slots__ = ("adapter", "call_signatures", "contents", "names", "nested_media", "pending", "sealed", "system")

    def __init__(self, adapter: GeminiAdapter, items: list[dict[str, Any]], model: str) -> None:
        self.adapter = adapter
        self.contents: list[dict[str, Any]] = []
        self.system: list[dict[str, Any]] = []
        self.pending: str | None = None  # a signature for the next model part
        self.nested_media = _generation(model) >= 3  # Gemini 3 takes media inside a function response
        self.names: dict[str, str] = {}  # call_id -> function name: a functionResponse must name it
        self.call_signatures: dict[str, str] = {}
        self.sealed: dict[int, list[dict[str, Any]]] = {}
        for i, item in enumerate(items):
            if item["type"] == "function_call":
                self.names[item["call_id"]] = item["name"]
            elif item["type"] == "reasoning":
                self._unseal(i, item, model)

    def _unseal(self, index: int, item: dict[str, Any], model: str) -> None:
        state = unseal(item.get("encrypted_content"), PROTOCOL)
        # A signature only verifies on the model that made it: after a failover it is dropped.
        if state is None or state.get("m") != model or not isinstance(state.get("g"), list):
            return
        entries = [e for e in state["g"] if isinstance(e, dict) and isinstance(e.get("s"), str)]
        self.sealed[index] = entries
        for entry in entries:
            if isinstance(entry.get("c"), str):
                self.call_signatures[entry["c"]] = entry["s"]

    def _model_part(self, part: dict[str, Any], signature: str | None = None) -> dict[str, Any]:
        signature = signature or self.pending
        self.pending = None
        if signature:
            part["thoughtSignature"] = signature
        return part

    def message(self, item: dict[str, Any], index: int) -> None:
        role = item["role"]
        if role == "user":
            self.pending = None
            parts = [p for j, part in enumerate(item["content"])
                     if (p := self.adapter.part(part, f"input[{index}].content[{j}]")) is not None]
            _append(self.contents, "user", parts)
        elif role == "assistant":
            texts = (part.get("text") or part.get("refusal") for part in item["content"])
            _append(self.contents, "model", [self._model_part({"text": text}) for text in texts if text])
        else:
            self.system.extend({"text": part["text"]} for part in item["content"] if part.get("text"))

    def function_call(self, item: dict[str, Any], index: int) -> None:
        call: dict[str, Any] = {"name": item["name"], "args": _arguments(item["arguments"], f"input[{index}]")}
        if self.adapter.send_call_ids:
            call["id"] = item["call_id"]
        part = self._model_part({"functionCall": call}, self.call_signatures.get(item["call_id"]))
        _append(self.contents, "model", [part])

    def function_output(self, item: dict[str, Any], index: int) -> None:
        self.pending = None
        name = self.names.get(item["call_id"])
        if name is None:
            raise InvalidRequest(f"No function_call with call_id {item['call_id']!r} is in the input; Gemini needs the "
                                 "function's name, which only that item carries.", param=f"input[{index}].call_id",
                                 code="invalid_value")
        _append(self.contents, "user", self.adapter.function_response(item, name, index, self.nested_media))

    def reasoning(self, index: int) -> None:
        for entry in self.sealed.get(index, ()):
            if "c" in entry:
                continue  # bound to its call by id
            if entry.get("a") == "p":
                _sign_last(self.contents, entry["s"])
            else:
                self.pending = entry["s"]

    def code(self, item: dict[str, Any]) -> None:
        parts = [self._model_part({"executableCode": {"language": "PYTHON", "code": item.get("code") or ""}})]
        outputs = item.get("outputs")
        if outputs is not None:
            logs = "".join(o.get("logs") or "" for o in outputs if isinstance(o, dict))
            outcome = "OUTCOME_FAILED" if item.get("status") == "failed" else "OUTCOME_OK"
            parts.append({"codeExecutionResult": {"outcome": outcome, "output": logs}})
        _append(self.contents, "model", parts)


# --- output -------------------------------------------------------------------------------------


class GeminiTranslator:
    """GenerateContentResponse chunks (or one whole response) -> Responses events."""

    def __init__(self, parsed: ParsedRequest, model: str) -> None:
        self.builder = ResponseEventBuilder()
        self.model = model
        self.keep_signatures = parsed.wants("reasoning.encrypted_content")
        self.include_sources = parsed.wants("web_search_call.action.sources")
        self.single_call = parsed.req.parallel_tool_calls is False
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.finish_message: str | None = None
        self.safety: list[dict[str, Any]] = []
        self.block: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.answered = False  # a candidate arrived
        self._in_text = False  # a message's output_text part is open
        self._rs_open = False  # a reasoning item is open
        self._rs_entries: list[dict[str, Any]] = []  # signatures sealed into the open reasoning item
        self._deferred: list[str] = []  # text signatures that arrived after their text began
        self._calls = 0
        self._open_call: tuple[int, _PartialArgs] | None = None
        self._dropping = False  # inside a call dropped because parallel_tool_calls is false
        self._code: dict[str, Any] | None = None  # executableCode waiting for its result
        self._text: list[str] = []  # the open message's text, for grounding offsets
        self._queries: list[str] = []
        self._sources: list[dict[str, Any]] = []

    def start(self) -> list[Event]:
        return self.builder.start()

    def feed_bytes(self, data: bytes) -> list[Event]:
        try:
            chunk = _decode(data)
        except msgspec.DecodeError:
            self.error = {"code": "upstream_stream_error", "message": "Gemini sent an invalid stream chunk."}
            return []
        return self.feed(chunk) if isinstance(chunk, dict) else []

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if chunk.get("error"):
            err = chunk["error"]
            self.error = err if isinstance(err, dict) else {"message": str(err)}
            return []
        if chunk.get("usageMetadata"):
            self.usage = chunk["usageMetadata"]  # cumulative: the last one counts
        feedback = chunk.get("promptFeedback")
        if feedback and feedback.get("blockReason"):
            self.block = feedback
        candidates = chunk.get("candidates")
        if not candidates:
            return []
        self.answered = True
        candidate = candidates[0]
        events: list[Event] = []
        result = candidate.get("logprobsResult")
        logprobs = _logprobs(result) if result else None
        for part in (candidate.get("content") or {}).get("parts") or ():
            signature = part.get("thoughtSignature")
            if isinstance(part.get("text"), str):
                if part.get("thought"):
                    events += self._thought(part["text"], signature)
                else:
                    events += self._visible_text(part["text"], signature, logprobs)
                    logprobs = None
            elif isinstance(part.get("functionCall"), dict):
                events += self._function_call(part["functionCall"], signature)
            elif isinstance(part.get("executableCode"), dict):
                events += self._executable_code(part["executableCode"], signature)
            elif isinstance(part.get("codeExecutionResult"), dict):
                events += self._code_result(part["codeExecutionResult"])
            # inlineData / fileData output (image models) has no Responses item here: skipped.
        if candidate.get("groundingMetadata"):
            events += self._grounding(candidate["groundingMetadata"])
        if candidate.get("finishReason"):
            self.finish_reason = candidate["finishReason"]
            self.finish_message = candidate.get("finishMessage")
            self.safety = candidate.get("safetyRatings") or []
        return events

    # --- parts ---------------------------------------------------------------------------------

    def _thought(self, text: str, signature: str | None) -> list[Event]:
        events = self._interrupt()
        if text:
            # Gemini's thought summaries come as "**Heading**\n\n..." sections: one summary part each.
            events += self.builder.reasoning_summary(text, new_part=self._rs_open and text.startswith("**"))
            if not self._rs_open:
                self._rs_open, self._rs_entries = True, []
        if signature:
            events += self._seal({"s": signature, "a": "n"})
        return events

    def _visible_text(self, text: str, signature: str | None, logprobs: list[dict[str, Any]] | None) -> list[Event]:
        events = self._flush_code() + self._close_call()
        if signature and self.keep_signatures:
            if self._in_text:
                self._deferred.append(signature)  # sealed after the message, bound to it ("previous part")
            else:
                events += self._seal({"s": signature, "a": "n"})
        if text or logprobs:
            if not self._in_text:
                self._text = []
            self._rs_open = False  # the builder closes an open reasoning item when text starts
            events += self.builder.text(text, logprobs)
            self._in_text = True
            self._text.append(text)
        return events

    def _function_call(self, call: dict[str, Any], signature: str | None) -> list[Event]:
        events = self._interrupt(keep_call=True)
        name = call.get("name")
        if name:
            events += self._close_call()
            if self.single_call and self._calls:
                # parallel_tool_calls: false, which Gemini cannot be told: keep the first call only.
                self._dropping = bool(call.get("willContinue"))
                return events
            call_id = call.get("id") or new_id("call")
            if signature:
                events += self._seal({"s": signature, "c": call_id})
            events += self._end_reasoning()
            key = self._calls
            self._calls += 1
            events += self.builder.tool_call_start(key, call_id, name)
            if call.get("willContinue"):
                self._open_call = (key, _PartialArgs(call.get("args"), call_id))
                self._add_partial(call)
            else:
                events += self.builder.tool_call_arguments(key, _encode(call.get("args") or {}).decode())
                events += self.builder.end_tool_call(key)
        elif self._open_call is not None:
            # Vertex's streamFunctionCallArguments: `partialArgs` pieces, then `{}` ends the call.
            self._add_partial(call)
            if signature:
                self._open_call[1].signature = signature
            if not call.get("willContinue") and not call.get("partialArgs"):
                events += self._close_call()
        elif self._dropping and not call.get("willContinue") and not call.get("partialArgs"):
            self._dropping = False
        return events

    def _add_partial(self, call: dict[str, Any]) -> None:
        if call.get("partialArgs") and self._open_call is not None:
            self._open_call[1].feed(call["partialArgs"])

    def _close_call(self) -> list[Event]:
        if self._open_call is None:
            return []
        (key, args), self._open_call = self._open_call, None
        events = self.builder.tool_call_arguments(key, _encode(args.value).decode())
        events += self.builder.end_tool_call(key)
        if args.signature:  # bound to the call by id, so it may follow it
            events += self._seal({"s": args.signature, "c": args.call_id}) + self._end_reasoning()
        return events

    def _executable_code(self, code: dict[str, Any], signature: str | None) -> list[Event]:
        events = self._interrupt()
        if signature:
            events += self._seal({"s": signature, "a": "n"})
        events += self._end_reasoning()
        self._code = {"id": new_id("ci"), "type": "code_interpreter_call", "status": "completed",
                      "code": code.get("code") or "", "container_id": "gemini", "outputs": []}
        return events

    def _code_result(self, result: dict[str, Any]) -> list[Event]:
        events = self._leave_text() + self._close_call()
        item = self._code or {"id": new_id("ci"), "type": "code_interpreter_call", "status": "completed",
                              "code": None, "container_id": "gemini", "outputs": []}
        self._code = None
        if result.get("outcome") not in (None, "OUTCOME_OK"):
            item["status"] = "failed"
        if result.get("output"):
            item["outputs"] = [{"type": "logs", "logs": result["output"]}]
        return events + self._end_reasoning() + self.builder.item(item)

    def _flush_code(self) -> list[Event]:
        if self._code is None:
            return []
        item, self._code = self._code, None
        self._rs_open = False
        return self.builder.item(item)

    # --- signatures ----------------------------------------------------------------------------

    def _seal(self, entry: dict[str, Any]) -> list[Event]:
        """Seal a signature into the open reasoning item (opening one if needed)."""
        if not self.keep_signatures:
            return []
        if not self._rs_open:
            self._rs_open, self._rs_entries = True, []
            self._in_text = False  # opening a reasoning item closes the message
        self._rs_entries.append(entry)
        return self.builder.reasoning_signature(seal(PROTOCOL, {"m": self.model, "g": self._rs_entries}))

    def _end_reasoning(self) -> list[Event]:
        if not self._rs_open:
            return []
        self._rs_open = False
        return self.builder.end_reasoning()

    def _leave_text(self) -> list[Event]:
        """Before anything but text: seal the signatures that arrived after their text began."""
        events: list[Event] = []
        if self._deferred:
            self._in_text = False
            for signature in self._deferred:
                events += self._seal({"s": signature, "a": "p"})
            self._deferred = []
            events += self._end_reasoning()
        self._in_text = False
        return events

    def _interrupt(self, *, keep_call: bool = False) -> list[Event]:
        """Close what a new kind of part ends: the text (and its late signatures), pending code, a streamed call."""
        events = self._leave_text() + self._flush_code()
        return events if keep_call else events + self._close_call()

    # --- grounding (Google Search) -----------------------------------------------------------

    def _grounding(self, metadata: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        # When streaming, each chunk lists only the sources not sent before; indices are global.
        self._sources.extend(c.get("web") or c.get("retrievedContext") or {} for c in
                             metadata.get("groundingChunks") or ())
        for query in metadata.get("webSearchQueries") or ():
            if query not in self._queries:
                self._queries.append(query)
        supports = metadata.get("groundingSupports")
        if supports and self._in_text:  # offsets are into the open message's text
            text = "".join(self._text)
            encoded = text.encode()
            ascii_only = len(encoded) == len(text)
            for support in supports:
                segment = support.get("segment") or {}
                start, end = segment.get("startIndex", 0), segment.get("endIndex", 0)
                if end > len(encoded) or start > end:
                    continue
                if not ascii_only:  # Gemini counts UTF-8 bytes; Responses counts characters
                    start = len(encoded[:start].decode(errors="ignore"))
                    end = len(encoded[:end].decode(errors="ignore"))
                for index in support.get("groundingChunkIndices") or ():
                    if 0 <= index < len(self._sources) and self._sources[index].get("uri"):
                        source = self._sources[index]
                        events += self.builder.annotation({"type": "url_citation", "url": source["uri"],
                                                           "title": source.get("title") or "",
                                                           "start_index": start, "end_index": end})
        return events

    def _search_item(self) -> dict[str, Any]:
        action: dict[str, Any] = {"type": "search", "query": self._queries[0], "queries": list(self._queries)}
        if self.include_sources:
            action["sources"] = [{"type": "url", "url": s["uri"]} for s in self._sources if s.get("uri")]
        return {"id": new_id("ws"), "type": "web_search_call", "status": "completed", "action": action}

    # --- end -----------------------------------------------------------------------------------

    def finish(self, *, cut_short_ok: bool = False) -> list[Event]:
        if self.error is not None:
            status = self.error.get("status")
            code = "rate_limit_exceeded" if self.error.get("code") == 429 or status == "RESOURCE_EXHAUSTED" else (
                status.lower() if isinstance(status, str) else str(self.error.get("code") or "server_error"))
            return [{"type": "error", "code": code,
                     "message": str(self.error.get("message") or "Gemini reported an error."), "param": None}]
        if self.block is None and ((self.finish_reason is None and not cut_short_ok) or not self.answered):
            return []  # the upstream stopped mid-answer (or said nothing): the gateway reports the failure
        events = self._flush_code() + self._close_call()
        reason = self.finish_reason or "STOP"
        incomplete = _INCOMPLETE.get(reason)
        error = None
        if self.block is not None:
            incomplete = "content_filter"
            events += self._leave_text() + self._end_reasoning() + self.builder.refusal(_block_message(self.block))
        elif incomplete == "content_filter":
            events += self._leave_text() + self._end_reasoning()
            events += self.builder.refusal(_stop_message(reason, self.finish_message, self.safety))
        elif incomplete is None and reason not in _COMPLETED:
            error = {"code": "server_error", "message": _stop_message(reason, self.finish_message, self.safety)}
        deferred, self._deferred = self._deferred, []
        events += self.builder.finish(incomplete=incomplete is not None)
        # Whole items after the open ones closed, so their status (incomplete) is kept.
        if self._queries:
            events += self.builder.item(self._search_item())
        for signature in deferred:
            events += self.builder.reasoning_signature(seal(PROTOCOL, {"m": self.model,
                                                                       "g": [{"s": signature, "a": "p"}]}))
            events += self.builder.end_reasoning()
        usage = usage_from_gemini(self.usage)
        if usage is not None and self._queries:
            usage["tool_calls"] = {"web_search": len(self._queries)}
        status = "failed" if error else "incomplete" if incomplete else "completed"
        result: dict[str, Any] = {"status": status, "output": self.builder.output, "usage": usage,
                                  "incomplete_details": {"reason": incomplete} if incomplete else None}
        if error:
            result["error"] = error
        kind = {"failed": "response.failed", "incomplete": "response.incomplete"}.get(status, "response.completed")
        events.append({"type": kind, "response": result})
        return events


class _PartialArgs:
    """Function call arguments streamed as `partialArgs` (`jsonPath` + value pieces)."""

    __slots__ = ("_open", "call_id", "signature", "value")

    def __init__(self, args: Any, call_id: str) -> None:
        self.value: dict[str, Any] = dict(args) if isinstance(args, dict) else {}
        self.call_id = call_id
        self.signature: str | None = None
        self._open: set[str] = set()  # paths of strings still being streamed

    def feed(self, pieces: list[dict[str, Any]]) -> None:
        for piece in pieces:
            path = piece.get("jsonPath")
            if not isinstance(path, str):
                continue
            keys = _json_path(path)
            if not keys:
                continue
            if "stringValue" in piece:
                value: Any = piece["stringValue"] or ""
                if path in self._open:
                    previous = _get(self.value, keys)
                    value = (previous if isinstance(previous, str) else "") + value
                if piece.get("willContinue"):
                    self._open.add(path)
                else:
                    self._open.discard(path)
            elif "numberValue" in piece:
                value = piece["numberValue"]
            elif "boolValue" in piece:
                value = piece["boolValue"]
            elif "nullValue" in piece:
                value = None
            else:
                continue
            _set(self.value, keys, value)


_PATH_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]")


def _json_path(path: str) -> list[str | int]:
    """`$.recipe.ingredients[0].name` -> ['recipe', 'ingredients', 0, 'name']."""
    keys: list[str | int] = []
    for match in _PATH_TOKEN.finditer(path, 1 if path.startswith("$") else 0):
        name, index, quoted = match.groups()
        keys.append(int(index) if index is not None else name if name is not None else quoted)
    return keys


def _get(root: Any, keys: list[str | int]) -> Any:
    for key in keys:
        if isinstance(key, int):
            root = root[key] if isinstance(root, list) and key < len(root) else None
        else:
            root = root.get(key) if isinstance(root, dict) else None
    return root


def _set(root: dict[str, Any], keys: list[str | int], value: Any) -> None:
    node: Any = root
    for key, following in itertools.pairwise(keys):
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(key, int):
            if not isinstance(node, list):
                return
            node.extend(None for _ in range(key + 1 - len(node)))
            if not isinstance(node[key], (dict, list)):
                node[key] = empty
            node = node[key]
        else:
            if not isinstance(node, dict):
                return
            if not isinstance(node.get(key), (dict, list)):
                node[key] = empty
            node = node[key]
    last = keys[-1]
    if isinstance(last, int) and isinstance(node, list):
        node.extend(None for _ in range(last + 1 - len(node)))
        node[last] = value
    elif isinstance(last, str) and isinstance(node, dict):
        node[last] = value


# --- translation helpers -------------------------------------------------------------------------


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    """Add parts as a turn, merged into the previous turn when it has the same role."""
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _sign_last(contents: list[dict[str, Any]], signature: str) -> None:
    """A signature Gemini streamed after its text: back onto the model turn's last part."""
    if contents and contents[-1]["role"] == "model":
        last = contents[-1]["parts"][-1]
        last.setdefault("thoughtSignature", signature)


def _add_dummy_signatures(contents: list[dict[str, Any]]) -> None:
    for content in contents:
        if content["role"] != "model":
            continue
        calls = [part for part in content["parts"] if "functionCall" in part]
        if calls and not any("thoughtSignature" in part for part in calls):
            calls[0]["thoughtSignature"] = DUMMY_SIGNATURE


def _arguments(arguments: str, where: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        value = _decode(arguments)
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequest(f"Invalid '{where}.arguments': Gemini needs the arguments as a JSON object.",
                             param=f"{where}.arguments", code="invalid_value")
    return value


def _generation(model: str) -> int:
    """Gemini's major version from the model id (`gemini-2.5-flash` -> 2); `*-latest` counts as 3."""
    match = _VERSION.search(model)
    if match:
        return int(match.group(1))
    return 3 if model.startswith("gemini-") and model.endswith("-latest") else 0


def _thinking_kind(model: str) -> str | None:
    generation = _generation(model)
    if generation >= 3:
        return "level"
    match = _VERSION.search(model)
    if match and generation == 2 and int(match.group(2) or 0) >= 5:
        return "budget"
    return None


def _retry_delay(details: list[dict[str, Any]]) -> str | None:
    """`RetryInfo.retryDelay` ("34.4s") -> a Retry-After value in whole seconds ("35")."""
    for detail in details:
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return str(max(1, math.ceil(float(delay[:-1]))))
            except ValueError:
                return None
    return None


def _logprobs(result: dict[str, Any]) -> list[dict[str, Any]] | None:
    chosen = result.get("chosenCandidates")
    if not chosen:
        return None
    top = result.get("topCandidates") or []
    out = []
    for i, candidate in enumerate(chosen):
        token = candidate.get("token") or ""
        alternatives = (top[i].get("candidates") or []) if i < len(top) else []
        out.append({
            "token": token,
            "logprob": candidate.get("logProbability", 0.0),
            "bytes": list(token.encode()),
            "top_logprobs": [{"token": alt.get("token") or "", "logprob": alt.get("logProbability", 0.0),
                              "bytes": list((alt.get("token") or "").encode())} for alt in alternatives],
        })
    return out


def _block_message(feedback: dict[str, Any]) -> str:
    reason = feedback.get("blockReason")
    detail = feedback.get("blockReasonMessage")
    return f"Gemini blocked the prompt ({reason})" + (f": {detail}" if detail else ".")


def _stop_message(reason: str, message: str | None, ratings: list[dict[str, Any]]) -> str:
    blocked = [r.get("category") for r in ratings if r.get("blocked")]
    text = f"Gemini stopped the response ({reason})"
    if blocked:
        text += f" for {', '.join(str(c) for c in blocked)}"
    return text + (f": {message}" if message else ".")


def usage_from_gemini(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """`usageMetadata` -> canonical usage: tool-use prompt tokens are input, thoughts are output."""
    if not usage:
        return None
    input_tokens = (usage.get("promptTokenCount") or 0) + (usage.get("toolUsePromptTokenCount") or 0)
    thoughts = usage.get("thoughtsTokenCount") or 0
    output_tokens = (usage.get("candidatesTokenCount") or usage.get("responseTokenCount") or 0) + thoughts
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": usage.get("cachedContentTokenCount") or 0,
                                 "cached_tokens_created": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": thoughts},
        "total_tokens": usage.get("totalTokenCount") or input_tokens + output_tokens,
    }
