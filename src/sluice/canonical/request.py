"""The validated `POST /v1/responses` request.

Validation follows the endpoint reference's limits. A violation raises `InvalidRequest` naming the
offending `param` the way OpenAI does (`input[2].content`, `temperature`). Fields the reference
marks unsupported (background, conversation, prompt, ...) are accepted, validated and ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from sluice.canonical.checks import check_cache_control, check_schema, check_tool_choice, check_tools
from sluice.canonical.limits import DEFAULT_LIMITS, check_input_counts, check_json_shape
from sluice.config import INTERVAL_PATTERN, SORT_PATTERN, ServerConfig
from sluice.errors import InvalidRequest

MAX_SAFE_INT = 9007199254740991

IncludeValue = Literal[
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.output_text.logprobs",
    "message.input_image.image_url",
    "reasoning.encrypted_content",
    "file_search_call.results",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
]

_SORT = re.compile(SORT_PATTERN)
_INTERVAL = re.compile(INTERVAL_PATTERN)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


class Reasoning(msgspec.Struct, omit_defaults=True):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class TextConfig(msgspec.Struct, omit_defaults=True):
    format: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class CacheControl(msgspec.Struct, omit_defaults=True):
    type: Literal["ephemeral"] = "ephemeral"
    ttl: Literal["5m", "1h"] | None = None


class ModelRouting(msgspec.Struct, omit_defaults=True):
    fallbacks: list[str] = []
    sort: str | None = None


class ProviderRouting(msgspec.Struct, omit_defaults=True):
    fallbacks: list[str] = []
    sort: str | None = None
    interval: str | None = None


class Routing(msgspec.Struct, omit_defaults=True):
    model: ModelRouting | None = None
    provider: ProviderRouting | None = None


class StreamOptions(msgspec.Struct, omit_defaults=True):
    include_obfuscation: bool | None = None


class ResponsesRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: Annotated[str, Meta(min_length=1)]
    input: Annotated[str, Meta(min_length=1)] | Annotated[list[dict[str, Any]], Meta(min_length=1)]
    include: Annotated[list[IncludeValue], Meta(max_length=8)] | None = None
    instructions: str | None = None
    max_output_tokens: Annotated[int, Meta(gt=0, le=MAX_SAFE_INT)] | None = None
    metadata: (
        Annotated[dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=512)]], Meta(max_length=16)]
        | None
    ) = None
    reasoning: Reasoning | None = None
    stream: bool | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    text: TextConfig | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in-memory", "in_memory", "24h"] | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    store: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    routing: Routing | None = None
    cache_control: CacheControl | None = None
    # Accepted for compatibility and ignored, as the endpoint reference says.
    background: bool | None = None
    context_management: list[dict[str, Any]] | None = None
    conversation: str | dict[str, Any] | None = None
    max_tool_calls: Annotated[int, Meta(gt=0, le=MAX_SAFE_INT)] | None = None
    prompt: dict[str, Any] | None = None
    safety_identifier: str | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None


# Top-level request fields Sluice models; anything else a client sends is kept in `extra`.
REQUEST_FIELDS = frozenset(ResponsesRequest.__struct_fields__)


@dataclass(frozen=True, slots=True)
class CanonicalRequest:
    """The one request every stage and adapter reads.

    `req` holds the typed fields; its `input` is the normalized item list (also `items`), so there
    is exactly one copy of the conversation. `extra` holds the top-level fields Sluice does not
    model (newer OpenAI fields such as `client_metadata`): only an upstream that speaks OpenAI's
    own protocol receives them, untouched. A stage that rewrites the request (redaction, history
    from `previous_response_id`) builds a new one with `replace`; nothing else keeps the client's
    original text for an adapter to read.
    """

    req: ResponsesRequest
    extra: dict[str, Any]

    @property
    def items(self) -> list[dict[str, Any]]:
        return self.req.input  # type: ignore[return-value]  # normalized to items at parse time

    @property
    def stream(self) -> bool:
        return bool(self.req.stream)

    def wants(self, include: str) -> bool:
        return bool(self.req.include) and include in self.req.include  # type: ignore[operator]

    def replace(self, *, items: list[dict[str, Any]] | None = None, **fields: Any) -> CanonicalRequest:
        """A copy with `items` and/or typed fields (`instructions`, `tools`, ...) replaced."""
        if items is not None:
            fields["input"] = items
        return CanonicalRequest(msgspec.structs.replace(self.req, **fields), self.extra)


_decoder = msgspec.json.Decoder()


def parse_request(body: bytes, limits: ServerConfig = DEFAULT_LIMITS) -> CanonicalRequest:
    """Decode and validate a request body, or raise `InvalidRequest`."""
    check_json_shape(body, limits)
    try:
        raw = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}.", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest("The JSON body of your request is nested too deeply.", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    try:
        req = msgspec.convert(raw, ResponsesRequest)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, raw) from None
    check_input_counts(req.input, limits)
    req.input = normalize_input(req.input)
    _check_request(req)
    extra = {key: value for key, value in raw.items() if key not in REQUEST_FIELDS}
    return CanonicalRequest(req, extra)


def _validation_error(exc: msgspec.ValidationError, raw: dict[str, Any]) -> InvalidRequest:
    text = str(exc)
    message, _, where = text.partition(" - at ")
    # "`$.metadata[...]`", or "`key` in `$.metadata`" for a bad mapping key
    where = where.rpartition("`$.")[2] if "`$." in where else ""
    param = where.rstrip("`").replace("[...]", "") or None
    if text.startswith("Object missing required field"):
        # "Object missing required field `model`" (possibly nested)
        field = text.split("`")[1]
        param = f"{param}.{field}" if param else field
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if param:
        return InvalidRequest(f"Invalid value for '{param}': {message[0].lower()}{message[1:]}.", param=param,
                              code="invalid_value")
    return InvalidRequest(f"Invalid request: {text}.", code="invalid_value")


def _fail(param: str, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


# --- input items -------------------------------------------------------------------------------

_ROLES = frozenset({"user", "assistant", "system", "developer"})
# Text-bearing content part type -> the key that holds its text.
TEXT_PART_FIELDS = {"input_text": "text", "output_text": "text", "refusal": "refusal", "summary_text": "text",
               "reasoning_text": "text"}
# The input item types of OpenAI's Responses API (`InputItem`); anything else is a typo or a
# newer type, refused by name rather than silently mistranslated.
ITEM_TYPES = frozenset({
    "message", "function_call", "function_call_output", "reasoning", "item_reference", "custom_tool_call",
    "custom_tool_call_output", "web_search_call", "file_search_call", "computer_call", "computer_call_output",
    "code_interpreter_call", "image_generation_call", "local_shell_call", "local_shell_call_output", "shell_call",
    "shell_call_output", "apply_patch_call", "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "mcp_call", "tool_search_call", "tool_search_output", "additional_tools",
    "compaction", "compaction_trigger", "program", "program_output",
})
# Content part types a tool's output may carry (OpenAI's FunctionCallOutputItemParam).
OUTPUT_PARTS = frozenset({"input_text", "input_image", "input_file"})
# Content part types a message may carry.
MESSAGE_PARTS = frozenset({"input_text", "input_image", "input_file", "input_audio", "output_text", "refusal"})


def normalize_input(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The input as a list of item dicts, messages given an explicit `type` and content list."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    items = []
    for i, item in enumerate(value):
        kind = item.get("type", "message")
        where = f"input[{i}]"
        if "cache_control" in item:
            check_cache_control(item["cache_control"], f"{where}.cache_control")
        if kind == "message":
            items.append(_normalize_message(item, where))
            continue
        if kind == "function_call":
            _require_str(item, ("call_id", "name", "arguments"), where)
            _optional_str(item, "namespace", where)
        elif kind == "custom_tool_call":
            _require_str(item, ("call_id", "name", "input"), where)
            _optional_str(item, "namespace", where)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            _require_str(item, ("call_id",), where)
            output = item.get("output")
            if not isinstance(output, (str, list)):
                raise _fail(f"{where}.output", f"Invalid type for '{where}.output': expected a string or a list of "
                            "content parts.", "invalid_type")
            if isinstance(output, list):
                for j, part in enumerate(output):
                    _check_part(part, f"{where}.output[{j}]")
                    if part["type"] not in OUTPUT_PARTS:
                        raise _fail(f"{where}.output[{j}].type", f"Invalid value for '{where}.output[{j}].type': "
                                    f"{part['type']!r} is not a tool output part type (input_text, input_image, "
                                    "input_file).")
            if "is_error" in item and not isinstance(item["is_error"], bool):
                raise _fail(f"{where}.is_error", f"Invalid type for '{where}.is_error': expected a boolean.",
                            "invalid_type")
        elif kind == "reasoning":
            if not isinstance(item.get("summary", []), list):
                raise _fail(f"{where}.summary", f"Invalid type for '{where}.summary': expected an array.",
                            "invalid_type")
        elif kind == "item_reference":
            _require_str(item, ("id",), where)
        elif not isinstance(kind, str):
            raise _fail(f"{where}.type", f"Invalid type for '{where}.type': expected a string.", "invalid_type")
        elif kind not in ITEM_TYPES:
            raise _fail(f"{where}.type", f"Invalid value for '{where}.type': {kind!r} is not an input item type of "
                        "the Responses API.")
        items.append(item)
    return items


def _normalize_message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise _fail(f"{where}.role", f"Invalid value for '{where}.role': expected one of 'user', 'assistant', "
                    f"'system' or 'developer', got {role!r}.")
    content = item.get("content")
    if isinstance(content, str):
        part_type = "output_text" if role == "assistant" else "input_text"
        parts = [{"type": part_type, "text": content}]
    elif isinstance(content, list):
        for j, part in enumerate(content):
            _check_part(part, f"{where}.content[{j}]")
            if part["type"] not in MESSAGE_PARTS:
                raise _fail(f"{where}.content[{j}].type", f"Invalid value for '{where}.content[{j}].type': "
                            f"{part['type']!r} is not a message content part type (input_text, input_image, "
                            "input_file, output_text, refusal).")
        parts = content
    else:
        raise _fail(f"{where}.content", f"Invalid type for '{where}.content': expected a string or an array of "
                    "content parts.", "invalid_type")
    normalized = {**item, "type": "message", "content": parts}
    return normalized


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise _fail(f"{where}.type", f"Missing required parameter: '{where}.type'.", "missing_required_parameter")
    if "cache_control" in part:
        check_cache_control(part["cache_control"], f"{where}.cache_control")
    kind = part["type"]
    field = TEXT_PART_FIELDS.get(kind)
    if field is not None:
        _require_str(part, (field,), where)
    elif kind == "input_image":
        if not isinstance(part.get("image_url"), str) and not isinstance(part.get("file_id"), str):
            raise _fail(f"{where}.image_url", f"Invalid '{where}': an input_image needs 'image_url' or 'file_id'.")
        if part.get("detail") not in (None, "auto", "low", "high", "original"):
            raise _fail(f"{where}.detail", f"Invalid value for '{where}.detail': expected 'auto', 'low' or 'high'.")
    elif kind == "input_file" and not any(isinstance(part.get(k), str) for k in ("file_data", "file_id", "file_url")):
        raise _fail(where, f"Invalid '{where}': an input_file needs 'file_data', 'file_id' or 'file_url'.")


def _optional_str(obj: dict[str, Any], field: str, where: str) -> None:
    if field in obj and not isinstance(obj[field], str):
        raise _fail(f"{where}.{field}", f"Invalid type for '{where}.{field}': expected a string.", "invalid_type")


def _require_str(obj: dict[str, Any], fields: tuple[str, ...], where: str) -> None:
    for field in fields:
        value = obj.get(field)
        if value is None:
            raise _fail(f"{where}.{field}", f"Missing required parameter: '{where}.{field}'.",
                        "missing_required_parameter")
        if not isinstance(value, str):
            raise _fail(f"{where}.{field}", f"Invalid type for '{where}.{field}': expected a string.", "invalid_type")


# --- the rest of the request ------------------------------------------------------------------


def _check_tool_name(tool: dict[str, Any], where: str, kind: str) -> None:
    name = tool.get("name")
    if not isinstance(name, str):
        raise _fail(f"{where}.name", f"Missing required parameter: '{where}.name'.", "missing_required_parameter")
    if not _TOOL_NAME.match(name):
        raise _fail(f"{where}.name", f"Invalid '{where}.name': {name!r} must match ^[a-zA-Z0-9_-]{{1,128}}$.")
    params = tool.get("parameters")
    if kind == "function" and params is not None and not isinstance(params, dict):
        raise _fail(f"{where}.parameters", f"Invalid type for '{where}.parameters': expected an object (a JSON "
                    "schema).", "invalid_type")


def _check_request(req: ResponsesRequest) -> None:
    if req.previous_response_id is not None and req.conversation is not None:
        raise _fail("previous_response_id", "'previous_response_id' cannot be used together with 'conversation'.")
    for i, tool in enumerate(req.tools or ()):
        kind = tool.get("type")
        if not isinstance(kind, str):
            raise _fail(f"tools[{i}].type", f"Missing required parameter: 'tools[{i}].type'.",
                        "missing_required_parameter")
        if kind in ("function", "custom"):
            _check_tool_name(tool, f"tools[{i}]", kind)
        elif kind == "namespace":
            _require_str(tool, ("name",), f"tools[{i}]")
            inner_tools = tool.get("tools")
            if not isinstance(inner_tools, list) or not inner_tools:
                raise _fail(f"tools[{i}].tools", f"Invalid value for 'tools[{i}].tools': a namespace needs a "
                            "non-empty list of function and custom tools.")
            for j, inner in enumerate(inner_tools):
                inner_kind = inner.get("type") if isinstance(inner, dict) else None
                if inner_kind not in ("function", "custom"):
                    raise _fail(f"tools[{i}].tools[{j}].type", f"Invalid value for 'tools[{i}].tools[{j}].type': "
                                "a namespace holds function and custom tools.")
                _check_tool_name(inner, f"tools[{i}].tools[{j}]", inner_kind)
    if req.tools:
        check_tools(req.tools)
    choice = req.tool_choice
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        raise _fail("tool_choice", f"Invalid value for 'tool_choice': expected 'auto', 'none', 'required' or an "
                    f"object, got {choice!r}.")
    if isinstance(choice, dict):
        if not isinstance(choice.get("type"), str):
            raise _fail("tool_choice.type", "Missing required parameter: 'tool_choice.type'.",
                        "missing_required_parameter")
        if choice["type"] in ("function", "custom"):
            _require_str(choice, ("name",), "tool_choice")
            _optional_str(choice, "namespace", "tool_choice")
        check_tool_choice(choice)
        _check_choice_names(choice, req.tools or [])
    fmt = req.text.format if req.text else None
    if fmt is not None:
        kind = fmt.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise _fail("text.format.type", "Invalid value for 'text.format.type': expected 'text', 'json_object' "
                        f"or 'json_schema', got {kind!r}.")
        if kind == "json_schema":
            if not isinstance(fmt.get("name"), str):
                raise _fail("text.format.name", "Missing required parameter: 'text.format.name'.",
                            "missing_required_parameter")
            if not isinstance(fmt.get("schema"), dict):
                raise _fail("text.format.schema", "Missing required parameter: 'text.format.schema'.",
                            "missing_required_parameter")
            check_schema(fmt["schema"], "text.format.schema")
    routing = req.routing
    if routing is not None:
        for name, part in (("model", routing.model), ("provider", routing.provider)):
            if part is not None and part.sort is not None and not _SORT.match(part.sort):
                raise _fail(f"routing.{name}.sort", f"Invalid value for 'routing.{name}.sort': {part.sort!r} is not a "
                            "known sort (cost, performance, avg_latency, pNN_latency, throughput, uptime, ...).")
        if routing.provider is not None and routing.provider.interval is not None and not _INTERVAL.match(
            routing.provider.interval
        ):
            raise _fail("routing.provider.interval", "Invalid value for 'routing.provider.interval': expected a "
                        "window like '15m', '1h', '24h' or '7d'.")


def _check_choice_names(choice: dict[str, Any], tools: list[dict[str, Any]]) -> None:
    """A forced function must be one of the request's tools (as OpenAI answers, a 400)."""
    if choice["type"] != "function" or any(tool.get("type") == "namespace" for tool in tools):
        return  # names inside a namespace are matched by the adapters that flatten it
    names = {tool.get("name") for tool in tools if tool.get("type") == "function"}
    if choice["name"] not in names:
        raise _fail("tool_choice.name", f"Invalid value for 'tool_choice.name': no function named "
                    f"{choice['name']!r} is in 'tools'.")
