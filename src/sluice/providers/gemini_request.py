"""Responses request -> Gemini `generateContent` / `streamGenerateContent` request body.

Input items become `contents` (user/model turns, consecutive same-role turns merged) and a
`systemInstruction`; tools become `functionDeclarations` (plus `googleSearch` / `codeExecution`) and
a `toolConfig`; sampling, structured output, logprobs and `reasoning.effort` become the
`generationConfig`. `build_body` returns the body as a dict; the adapter encodes and sends it.

Structured output with tools: Gemini 2.x refuses `responseMimeType: application/json` next to tools
("Function calling with a response mime type: 'application/json' is unsupported"); only Gemini 3
takes both. Before Gemini 3 a request with tools and `text.format` json_schema / json_object gets
no JSON mode: a system instruction asks for one JSON object (matching the schema) instead.

Thought signatures: Gemini hands back an opaque `thoughtSignature` on some parts (always on the
first function call of a Gemini 3 step, which it requires back). `gemini_response` seals them into
the `encrypted_content` of a reasoning item (`sluice1.gemini.…`, see `canonical/reasoning.py`) placed
next to the part they belong to; a client that round-trips output items as input gives them back,
and `_History` puts each one back on its part. The sealed state is `{"m": model, "g": [entry, ...]}`
where an entry is `{"s": sig, "c": call_id}` (bound to that function call wherever it is),
`{"s": sig, "a": "n"}` (the next model part) or `{"s": sig, "a": "p"}` (the previous model part, for
the signature Gemini streams after the text). docs/providers.md has the field-by-field mapping.
"""

from __future__ import annotations

import base64
import mimetypes
import re
from typing import Any

import msgspec

from sluice.canonical.reasoning import unseal
from sluice.canonical.request import CanonicalRequest
from sluice.canonical.texts import part_text
from sluice.errors import InvalidRequest
from sluice.providers.base import unsupported
from sluice.providers.gemini_schema import to_openapi_schema

_decode = msgspec.json.decode

PROTOCOL = "gemini"  # tag of the signature state sealed into encrypted_content
# Google's documented stand-in for a missing signature (history from another model, or a client
# that dropped reasoning items): Gemini 3 rejects a function call turn without any signature.
DUMMY_SIGNATURE = base64.b64encode(b"skip_thought_signature_validator").decode()
_VERSION = re.compile(r"gemini-(\d+)(?:\.(\d+))?")
# reasoning.effort -> thinkingBudget (Gemini 2.5) and thinkingLevel (Gemini 3+).
_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
_LEVELS = {"none": "MINIMAL", "minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH", "xhigh": "HIGH"}
# JSON mode emulated (Gemini 2.x with tools): the instruction added to systemInstruction.
JSON_OBJECT_NOTE = ("When you give your final answer (not a function call), respond with a single valid JSON "
                    "object and nothing else: no Markdown code fence, no text before or after it.")
JSON_SCHEMA_NOTE = JSON_OBJECT_NOTE + " The JSON object must match this JSON Schema:\n"
# input_image.detail -> Part.mediaResolution.level (Gemini 3+) / generationConfig.mediaResolution (before).
_PART_RESOLUTION = {"low": "MEDIA_RESOLUTION_LOW", "high": "MEDIA_RESOLUTION_HIGH",
                    "original": "MEDIA_RESOLUTION_ULTRA_HIGH"}
_REQUEST_RESOLUTION = {"low": "MEDIA_RESOLUTION_LOW", "high": "MEDIA_RESOLUTION_HIGH",
                       "original": "MEDIA_RESOLUTION_HIGH"}


def build_body(parsed: CanonicalRequest, model: str, provider: str, options: dict[str, Any],
               prefix: str) -> dict[str, Any]:
    """The request body for `model`; `prefix` (`{base_url}/v1beta`) resolves `files/...` ids."""
    return _BodyBuilder(provider, options, prefix).body(parsed, model)


class _BodyBuilder:
    """One provider's settings, applied to one request."""

    __slots__ = ("name", "openapi_schemas", "options", "part_resolution", "prefix", "send_call_ids")

    def __init__(self, name: str, options: dict[str, Any], prefix: str) -> None:
        self.name = name
        self.options = options
        self.prefix = prefix
        self.openapi_schemas = options.get("schema_mode") == "openapi"
        self.send_call_ids = bool(options.get("function_call_ids", False))
        self.part_resolution = False  # Gemini 3+ takes a media resolution per part

    def body(self, parsed: CanonicalRequest, model: str) -> dict[str, Any]:
        self.part_resolution = _generation(model) >= 3
        req = parsed.req
        options = self.options
        contents, system = self.contents(parsed, model)
        body: dict[str, Any] = {"contents": contents}
        tools: list[dict[str, Any]] = []
        tool_config = None
        if req.tools:
            tools, tool_config = self.tools(parsed)
        # Gemini 2.x refuses JSON mode next to tools: there the format becomes an instruction.
        json_mode = not tools or bool(self.options.get("json_mode_with_tools", _generation(model) >= 3))
        note = None if json_mode else _json_note(req.text.format if req.text is not None else None)
        if note:
            system.append({"text": note})
        if system:
            body["systemInstruction"] = {"parts": system}
        if tools:
            body["tools"] = tools
        if tool_config:
            body["toolConfig"] = tool_config
        generation = self.generation_config(parsed, model, json_mode)
        if generation:
            body["generationConfig"] = generation
        if options.get("safety_settings"):
            body["safetySettings"] = options["safety_settings"]
        extra = options.get("extra_body")
        if isinstance(extra, dict):
            body.update(extra)
        return body

    def contents(self, parsed: CanonicalRequest, model: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
        if self.options.get("dummy_thought_signatures", _generation(model) >= 3):
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
                image = self.media(url, where + ".image_url", "image/jpeg")
            else:
                image = self.file_ref(part["file_id"], where + ".file_id", None)
            level = _PART_RESOLUTION.get(part.get("detail")) if self.part_resolution else None
            if level:
                image["mediaResolution"] = {"level": level}
            return image
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
        """A function_call_output -> a functionResponse part, plus its media as sibling parts.

        On Gemini 3 (`nested`) inline media goes inside the function response (`parts`); a
        `FunctionResponsePart` holds `inlineData` only, so URLs / files (`fileData`) and any text
        stay sibling parts of the user turn, as before Gemini 3.
        """
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
            # Gemini 3 takes inline images and files inside the function response itself. A
            # FunctionResponsePart holds `inlineData` only: an image's mediaResolution stays out.
            inline = [{"inlineData": part["inlineData"]} for part in media if "inlineData" in part]
            if inline:
                function_response["parts"] = inline
                media = [part for part in media if "inlineData" not in part]
        return [{"functionResponse": function_response}, *media]

    def tools(self, parsed: CanonicalRequest) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
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

    def generation_config(self, parsed: CanonicalRequest, model: str, json_mode: bool = True) -> dict[str, Any]:
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
        fmt = req.text.format if req.text is not None and json_mode else None
        if fmt and fmt.get("type") == "json_schema":
            config["responseMimeType"] = "application/json"
            if self.openapi_schemas:
                config["responseSchema"] = to_openapi_schema(fmt["schema"], "text.format.schema")
            else:
                config["responseJsonSchema"] = fmt["schema"]
        elif fmt and fmt.get("type") == "json_object":
            config["responseMimeType"] = "application/json"
        resolution = None if self.part_resolution else _request_resolution(parsed.items)
        if resolution:
            config["mediaResolution"] = resolution
        if parsed.wants("message.output_text.logprobs") or req.top_logprobs:
            config["responseLogprobs"] = True
            if req.top_logprobs:
                config["logprobs"] = req.top_logprobs
        thinking = self.thinking_config(parsed, model)
        if thinking:
            config["thinkingConfig"] = thinking
        return config

    def thinking_config(self, parsed: CanonicalRequest, model: str) -> dict[str, Any]:
        reasoning = parsed.req.reasoning
        if reasoning is None:
            return {}
        effort = reasoning.effort
        config: dict[str, Any] = {}
        kind = self.options.get("thinking") or _thinking_kind(model)
        if effort is not None and kind == "level":
            levels = self.options.get("thinking_levels") or {}
            level = levels.get(effort) or _LEVELS[effort]
            if level == "MINIMAL" and "-pro" in model and effort not in levels:
                level = "LOW"  # Gemini 3 Pro has no MINIMAL
            config["thinkingLevel"] = level
        elif effort is not None and kind == "budget":
            budget = _BUDGETS[effort]
            # 2.5 Pro cannot turn thinking off (128 is its floor); 24576 is the Flash models' ceiling.
            config["thinkingBudget"] = max(budget, 128) if "-pro" in model else min(budget, 24576)
        # Thought summaries only when the client asked for a summary, as OpenAI gives summaries
        # only then (an effort alone changes how much the model thinks, not what the client sees).
        if reasoning.summary or reasoning.generate_summary:
            config["includeThoughts"] = True
        return config


class _History:
    """Input items -> Gemini turns, each sealed signature back on the part it came with."""

    __slots__ = ("builder", "call_signatures", "contents", "names", "nested_media", "pending", "sealed", "system")

    def __init__(self, builder: _BodyBuilder, items: list[dict[str, Any]], model: str) -> None:
        self.builder = builder
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
                     if (p := self.builder.part(part, f"input[{index}].content[{j}]")) is not None]
            _append(self.contents, "user", parts)
        elif role == "assistant":
            texts = (part_text(part) for part in item["content"])
            _append(self.contents, "model", [self._model_part({"text": text}) for text in texts if text])
        else:
            self.system.extend({"text": part["text"]} for part in item["content"] if part.get("text"))

    def function_call(self, item: dict[str, Any], index: int) -> None:
        call: dict[str, Any] = {"name": item["name"], "args": _arguments(item["arguments"], f"input[{index}]")}
        if self.builder.send_call_ids:
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
        _append(self.contents, "user", self.builder.function_response(item, name, index, self.nested_media))

    def reasoning(self, index: int) -> None:
        for entry in self.sealed.get(index, ()):
            if "c" in entry:
                continue  # bound to its call by id
            if entry.get("a") == "p":
                _sign_last(self.contents, entry["s"])
            else:
                self.pending = entry["s"]

    def code(self, item: dict[str, Any]) -> None:
        """One execution: `executableCode` + `codeExecutionResult`, exactly one pair.

        An item without code (its output only) is the second half of an execution an older answer
        split in two (an empty text part between code and result): its result completes the
        execution just before it instead of becoming a pair Gemini never produced.
        """
        code = item.get("code") or ""
        outputs = item.get("outputs")
        result = None
        if outputs is not None:
            logs = "".join(o.get("logs") or "" for o in outputs if isinstance(o, dict))
            outcome = "OUTCOME_FAILED" if item.get("status") == "failed" else "OUTCOME_OK"
            result = {"codeExecutionResult": {"outcome": outcome, "output": logs}}
        if not code:
            parts = self.contents[-1]["parts"] if self.contents and self.contents[-1]["role"] == "model" else []
            if result is None:
                return  # neither code nor output: nothing happened
            if parts and "executableCode" in parts[-1]:
                parts.append(result)  # the code went without a result
                return
            if (len(parts) >= 2 and "executableCode" in parts[-2] and "codeExecutionResult" in parts[-1]
                    and not parts[-1]["codeExecutionResult"].get("output")):
                parts[-1] = result  # the code's empty result stood for this output
                return
        parts = [self._model_part({"executableCode": {"language": "PYTHON", "code": code}})]
        if result is not None:
            parts.append(result)
        _append(self.contents, "model", parts)


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


def _request_resolution(items: list[dict[str, Any]]) -> str | None:
    """Before Gemini 3 the media resolution is one per request: set when every image asks the same detail."""
    details = set()
    for item in items:
        parts = item.get("content") if item["type"] == "message" else item.get("output")
        if isinstance(parts, list):
            details.update(p.get("detail") for p in parts if isinstance(p, dict) and p.get("type") == "input_image")
    if len(details) != 1:
        return None
    return _REQUEST_RESOLUTION.get(details.pop())


def _json_note(fmt: dict[str, Any] | None) -> str | None:
    """The instruction that stands in for JSON mode (json_schema: with the schema)."""
    if not fmt:
        return None
    if fmt.get("type") == "json_schema":
        schema = msgspec.json.encode(fmt["schema"]).decode()
        return JSON_SCHEMA_NOTE + schema
    if fmt.get("type") == "json_object":
        return JSON_OBJECT_NOTE
    return None


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

