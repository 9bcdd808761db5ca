"""Responses request -> Bedrock Converse request body (`/model/{modelId}/converse[-stream]`).

Field-by-field mapping (docs/providers.md has the full table):
instructions + system/developer messages -> `system`; user/assistant turns -> `messages` with
strict alternation (consecutive same-role turns merge); function calls / outputs -> `toolUse` /
`toolResult` blocks; sealed reasoning -> `reasoningContent`; `cache_control` -> `cachePoint`
blocks; sampling -> `inferenceConfig`; `text.format` json_schema -> `outputConfig.textFormat`
(the schema narrowed for Claude models as in the Anthropic adapter; or a forced tool,
`options.structured_output: tool`); `reasoning.effort` -> the model family's own field under
`additionalModelRequestFields`. Claude's rules (thinking budgets, sampling while thinking, forced
tools, cache points) come from `claude_policy`, shared with the Anthropic adapter.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from sluice.canonical.reasoning import unseal
from sluice.canonical.request import CanonicalRequest
from sluice.canonical.texts import part_text
from sluice.canonical.tools import ToolMap
from sluice.errors import InvalidRequest
from sluice.providers import claude_policy
from sluice.providers.claude_policy import JSON_OBJECT_NOTE, OPENING_USER_TEXT, PAST_TOOL_NOTE
from sluice.providers.claude_schema import strict_schema

PROTOCOL = "bedrock"

_encode = msgspec.json.encode
_decode = msgspec.json.decode

IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                 "image/webp": "webp"}
_IMAGE_EXTENSIONS = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "gif": "gif", "webp": "webp"}
DOCUMENT_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
}
_DOCUMENT_EXTENSIONS = frozenset(DOCUMENT_FORMATS.values()) | {"htm", "markdown"}

# reasoning.effort -> Nova 2's maxReasoningEffort and gpt-oss's reasoning_effort (Claude's thinking
# rules, shared with the Anthropic adapter, are in claude_policy).
_NOVA_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}

# Bedrock (Claude, Nova) rejects a request with more cache checkpoints; the same limit as Anthropic's.
MAX_CACHE_POINTS = claude_policy.MAX_BREAKPOINTS
# Cross-region inference profile prefixes in front of the vendor (`us.anthropic.claude-...`).
_REGION_PREFIXES = frozenset({"us", "eu", "apac", "us-gov", "global", "jp", "au", "ca"})
_TOOL_ID = re.compile(r"[a-zA-Z0-9_.:-]+")
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_.:-]")
_DOC_NAME_BAD = re.compile(r"[^A-Za-z0-9\-()\[\]\s]+")
_SPACES = re.compile(r"\s+")


@dataclass(slots=True)
class Plan:
    """What the answer's translation needs to know about the request that was sent."""

    family: str  # model vendor ("anthropic", "amazon", "openai", ...; "" when unknown)
    seal: bool  # return reasoning state as encrypted_content
    summary: bool  # show reasoning text as summary_text (the client asked for reasoning.summary)
    json_tool: str | None = None  # structured output emulated with this forced tool
    hide: bool = False  # show no reasoning text (Claude's thinking, no reasoning.summary asked for)
    tools: ToolMap | None = None  # wire names of flattened namespace / custom tools


def model_family(model: str) -> str:
    """The vendor part of a Bedrock model id, inference profile id or foundation-model ARN."""
    if model.startswith("arn:"):
        model = model.rsplit("/", 1)[-1]
    parts = model.split(".")
    if len(parts) < 2:
        return ""
    if parts[0] in _REGION_PREFIXES and len(parts) > 2:
        return parts[1]
    return parts[0]


def reasoning_style(family: str, model: str, options: dict[str, Any]) -> str:
    """How this model takes a reasoning effort: budget | adaptive | nova | openai | none."""
    style = options.get("reasoning")
    if isinstance(style, str) and style != "auto":
        return style
    if family == "anthropic" or "claude" in model:
        return "budget"
    if family == "amazon" and "nova-2" in model:
        return "nova"
    if family == "openai":
        return "openai"
    return "none"


# --- check: what Converse cannot carry --------------------------------------------------------


def check_part(part: dict[str, Any], where: str) -> None:
    """Raise `InvalidRequest` for an image or file part Converse cannot take."""
    kind = part.get("type")
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise InvalidRequest(f"Bedrock cannot resolve file ids; send '{where}' as a base64 data URL.",
                                 param=f"{where}.file_id", code="unsupported_parameter")
        if url.startswith("data:"):
            media, base64 = _data_url_header(url)
            if not base64 or media not in IMAGE_FORMATS:
                raise InvalidRequest(f"Invalid '{where}.image_url': Bedrock takes base64 PNG, JPEG, GIF or WebP "
                                     "data URLs.", param=f"{where}.image_url", code="unsupported_value")
        elif not (url.startswith("s3://") and _extension(url) in _IMAGE_EXTENSIONS):
            raise InvalidRequest(f"Bedrock cannot fetch image URLs; send '{where}.image_url' as a base64 data URL "
                                 "(or an s3:// URI of a .png/.jpg/.gif/.webp object).", param=f"{where}.image_url",
                                 code="unsupported_value")
    elif kind == "input_file":
        if isinstance(part.get("file_data"), str):
            if document_format(part) is None:
                raise InvalidRequest(f"Invalid '{where}.file_data': Bedrock documents must be PDF, CSV, DOC, DOCX, "
                                     "XLS, XLSX, HTML, TXT or MD (give a data URL with the media type, or a filename).",
                                     param=f"{where}.file_data", code="unsupported_value")
        elif isinstance(part.get("file_url"), str):
            url = part["file_url"]
            if not url.startswith("s3://") or document_format(part) is None:
                raise InvalidRequest(f"Bedrock cannot fetch file URLs; send '{where}' as file_data (base64) or an "
                                     "s3:// URI of a supported document.", param=f"{where}.file_url",
                                     code="unsupported_value")
        else:
            raise InvalidRequest(f"Bedrock cannot resolve file ids; send '{where}' as file_data.",
                                 param=f"{where}.file_id", code="unsupported_parameter")


def _data_url_header(url: str) -> tuple[str, bool]:
    """(media type, is base64) of a data URL, without touching its payload."""
    comma = url.find(",", 0, 256)
    header = url[5:comma] if comma > 0 else ""
    media, _, params = header.partition(";")
    return media.strip().lower(), "base64" in params


def _data_url_payload(url: str) -> str:
    return url[url.find(",", 0, 256) + 1 :]


def _extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


def document_format(part: dict[str, Any]) -> str | None:
    data = part.get("file_data")
    if isinstance(data, str) and data.startswith("data:"):
        fmt = DOCUMENT_FORMATS.get(_data_url_header(data)[0])
        if fmt:
            return fmt
    for name in (part.get("filename"), part.get("file_url")):
        if isinstance(name, str):
            ext = _extension(name)
            if ext in _DOCUMENT_EXTENSIONS:
                return {"htm": "html", "markdown": "md"}.get(ext, ext)
    return None


# --- the request body --------------------------------------------------------------------------


class _Builder:
    """Accumulates `system` and alternating `messages`."""

    __slots__ = ("cache_points", "doc_names", "hour_ttl", "messages", "system")

    def __init__(self) -> None:
        self.system: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.doc_names: set[str] = set()
        self.cache_points = 0
        self.hour_ttl = False

    def point(self, control: Any) -> dict[str, Any] | None:
        point = cache_point(control)
        if point is not None:
            self.cache_points += 1
            self.hour_ttl = self.hour_ttl or "ttl" in point["cachePoint"]
        return point

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == role:
            last["content"].extend(blocks)  # Converse requires user/assistant alternation
        else:
            self.messages.append({"role": role, "content": blocks})

    def add_tool_result(self, blocks: list[dict[str, Any]]) -> None:
        """Tool results open their user turn (Claude rejects a turn with anything before them)."""
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "user":
            self.messages.append({"role": "user", "content": blocks})
            return
        content = last["content"]
        at = next((i for i, block in enumerate(content) if "toolResult" not in block and "cachePoint" not in block),
                  len(content))
        content[at:at] = blocks


def add_point(blocks: list[dict[str, Any]], point: dict[str, Any] | None) -> None:
    """Put a cachePoint after `blocks` (none when they are empty).

    Two points in a row mark the same prefix: they are one point, 1h if either is (a part's
    cache_control on a message's last part and the message's own, say).
    """
    if point is None or not blocks:
        return
    last = blocks[-1].get("cachePoint")
    if last is None:
        blocks.append(point)
    elif "ttl" in point["cachePoint"]:
        last["ttl"] = point["cachePoint"]["ttl"]


def cache_point(control: Any) -> dict[str, Any] | None:
    """`cache_control` -> a cachePoint block (5 minutes is Bedrock's default TTL)."""
    if not isinstance(control, dict):
        return None
    point: dict[str, Any] = {"type": "default"}
    if control.get("ttl") == "1h":
        point["ttl"] = "1h"
    return {"cachePoint": point}


def build_body(parsed: CanonicalRequest, model: str, options: dict[str, Any]) -> tuple[dict[str, Any], Plan]:
    """The Converse request body (modelId travels in the path) and the plan for reading the answer."""
    req = parsed.req
    family = model_family(model)
    claude = family == "anthropic" or "claude" in model
    # Reasoning text is a summary when the client asked for one (as OpenAI shows it). Otherwise other
    # vendors' reasoning is raw chain of thought, shown as reasoning_text; Claude's thinking is itself
    # a summary, so it is not shown (as on the Anthropic adapter).
    summary = req.reasoning is not None and (req.reasoning.summary or req.reasoning.generate_summary) is not None
    plan = Plan(family=family, seal=parsed.wants("reasoning.encrypted_content"), summary=summary,
                hide=claude and not summary)
    out = _Builder()
    if req.instructions:
        out.system.append({"text": req.instructions})
    _convert_items(parsed.items, family, out)
    if out.messages and out.messages[0]["role"] == "assistant":
        # Converse requires the conversation to open with a user turn.
        out.messages.insert(0, {"role": "user", "content": [{"text": OPENING_USER_TEXT}]})
    fmt = req.text.format if req.text is not None else None
    if fmt and fmt.get("type") == "json_object":
        out.system.append({"text": JSON_OBJECT_NOTE})  # Converse has no JSON mode: an instruction is closest
    if req.cache_control is not None and out.messages:
        # Caching is prefix-based: one point after the last block covers tools, system and history.
        add_point(out.messages[-1]["content"], out.point(msgspec.to_builtins(req.cache_control)))

    body: dict[str, Any] = {"messages": out.messages}
    if out.system:
        body["system"] = out.system
    extra: dict[str, Any] = {}
    configured = options.get("additional_model_request_fields")
    if isinstance(configured, dict):
        extra.update(configured)
    _tools(parsed, out, body, options, plan, claude)
    if claude:
        _strict_tools(body, req.tools, model, options)
    inference: dict[str, Any] = {}
    max_tokens = _reasoning(parsed, model, family, options, body, extra)
    if max_tokens is not None:
        inference["maxTokens"] = max_tokens
    # Thinking, Sluice's or configured in additional_model_request_fields, takes Claude's sampling rules.
    thinking = "thinking" in extra
    if claude or thinking:
        temperature, top_p = claude_policy.sampling(req.temperature, req.top_p, thinking=thinking)
    else:
        temperature = min(req.temperature, 1.0) if req.temperature is not None else None  # Converse's range is 0..1
        top_p = req.top_p
    if temperature is not None:
        inference["temperature"] = temperature
    if top_p is not None:
        inference["topP"] = top_p
    if out.cache_points > MAX_CACHE_POINTS or out.hour_ttl:
        _limit_cache_points(body)
    if inference:
        body["inferenceConfig"] = inference
    if extra:
        body["additionalModelRequestFields"] = extra
    guardrail = options.get("guardrail_config")
    if isinstance(guardrail, dict):
        body["guardrailConfig"] = guardrail
    return body, plan


def _convert_items(items: list[dict[str, Any]], family: str, out: _Builder) -> None:
    for i, item in enumerate(items):
        kind = item["type"]
        point = out.point(item.get("cache_control"))
        if kind == "message":
            role = item["role"]
            if role in ("system", "developer"):
                # Converse has one system prompt: system/developer turns join it, in order.
                for part in item["content"]:
                    if part.get("type") in ("input_text", "output_text") and part.get("text"):
                        out.system.append({"text": part["text"]})
                        add_point(out.system, out.point(part.get("cache_control")))
                add_point(out.system, point)
                continue
            if role == "assistant":
                blocks = []
                for part in item["content"]:
                    if text := part_text(part):
                        blocks.append({"text": text})
                        add_point(blocks, out.point(part.get("cache_control")))
            else:
                blocks = _user_blocks(item["content"], out, points=True)
            add_point(blocks, point)
            out.add("assistant" if role == "assistant" else "user", blocks)
        elif kind == "function_call":
            blocks = [{"toolUse": {"toolUseId": tool_use_id(item["call_id"]), "name": item["name"],
                                   "input": _arguments(item["arguments"], f"input[{i}].arguments")}}]
            add_point(blocks, point)
            out.add("assistant", blocks)
        elif kind == "function_call_output":
            result: dict[str, Any] = {"toolUseId": tool_use_id(item["call_id"]),
                                      "content": _tool_result(item["output"], out)}
            if item.get("is_error"):
                result["status"] = "error"
            blocks = [{"toolResult": result}]
            # A tool result's content cannot hold a cachePoint: its parts' points follow the block.
            for part in item["output"] if isinstance(item["output"], list) else ():
                if isinstance(part, dict):
                    add_point(blocks, out.point(part.get("cache_control")))
            add_point(blocks, point)
            out.add_tool_result(blocks)
        elif kind == "reasoning":
            block = _reasoning_block(item, family)
            if block is not None:
                out.add("assistant", [block])
        # Other item types (another provider's built-in tool calls) have no Converse form.


def tool_use_id(call_id: str) -> str:
    """A call id in Converse's toolUseId form (`[a-zA-Z0-9_.:-]{1,64}`), mapped the same way every time."""
    if len(call_id) <= 64 and _TOOL_ID.fullmatch(call_id):
        return call_id
    cleaned = _TOOL_ID_BAD.sub("_", call_id)
    if 0 < len(cleaned) <= 64:
        return cleaned
    return "call_" + hashlib.sha256(call_id.encode()).hexdigest()[:40]


def _reasoning_block(item: dict[str, Any], family: str) -> dict[str, Any] | None:
    """Sealed Bedrock reasoning state -> a reasoningContent block; anything else is dropped."""
    state = unseal(item.get("encrypted_content"), PROTOCOL)
    if state is None:
        return None
    sealed_family = state.get("f") or ""
    if sealed_family and family and sealed_family != family:
        return None  # another vendor's signature would be rejected (e.g. gpt-oss takes no signature)
    if isinstance(state.get("redacted"), str):
        return {"reasoningContent": {"redactedContent": state["redacted"]}}
    text = state.get("text")
    if not isinstance(text, str):
        return None
    reasoning: dict[str, Any] = {"text": text}
    if isinstance(state.get("signature"), str):
        reasoning["signature"] = state["signature"]
    return {"reasoningContent": {"reasoningText": reasoning}}


def _arguments(arguments: str, param: str) -> Any:
    if not arguments.strip():
        return {}
    try:
        value = _decode(arguments)
    except msgspec.DecodeError:
        raise InvalidRequest(f"Invalid '{param}': Bedrock needs the function call arguments as a JSON object.",
                             param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"Invalid '{param}': Bedrock needs the function call arguments as a JSON object.",
                             param=param)
    return value


def _user_blocks(parts: list[dict[str, Any]], out: _Builder, points: bool = False) -> list[dict[str, Any]]:
    """Content blocks of user parts; with `points`, a part's cache_control as a cachePoint after it."""
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        kind = part.get("type")
        count = len(blocks)
        if kind in ("input_text", "output_text"):
            if part["text"]:  # Converse rejects blank text blocks
                blocks.append({"text": part["text"]})
        elif kind == "input_image":
            blocks.append(_image(part))
        elif kind == "input_file":
            blocks.append(_document(part, j, out))
        elif kind == "refusal" and part.get("refusal"):
            blocks.append({"text": part["refusal"]})
        if points and len(blocks) > count:
            add_point(blocks, out.point(part.get("cache_control")))
    return blocks


def _tool_result(output: str | list[dict[str, Any]], out: _Builder) -> list[dict[str, Any]]:
    if isinstance(output, str):
        return [{"text": output}] if output else []
    return _user_blocks([p for p in output if isinstance(p, dict)], out)


def _image(part: dict[str, Any]) -> dict[str, Any]:
    url = part["image_url"]  # check() let through only data: and s3:// URLs
    if url.startswith("data:"):
        fmt = IMAGE_FORMATS[_data_url_header(url)[0]]
        return {"image": {"format": fmt, "source": {"bytes": _data_url_payload(url)}}}
    return {"image": {"format": _IMAGE_EXTENSIONS[_extension(url)], "source": {"s3Location": {"uri": url}}}}


def _document(part: dict[str, Any], index: int, out: _Builder) -> dict[str, Any]:
    fmt = document_format(part)
    data = part.get("file_data")
    if isinstance(data, str):
        source: dict[str, Any] = {"bytes": _data_url_payload(data) if data.startswith("data:") else data}
    else:
        source = {"s3Location": {"uri": part["file_url"]}}
    return {"document": {"format": fmt, "name": _document_name(part, index, out), "source": source}}


def _document_name(part: dict[str, Any], index: int, out: _Builder) -> str:
    """A name Bedrock accepts (letters, digits, single spaces, hyphens, brackets), unique in the request."""
    filename = part.get("filename") or (part.get("file_url") or "").rsplit("/", 1)[-1]
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    name = _SPACES.sub(" ", _DOC_NAME_BAD.sub(" ", stem)).strip()[:190] or f"document {index + 1}"
    unique, n = name, 2
    while unique in out.doc_names:
        unique, n = f"{name} ({n})", n + 1
    out.doc_names.add(unique)
    return unique


# --- tools, structured output, reasoning --------------------------------------------------------


def _has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    return any("toolUse" in block or "toolResult" in block for m in messages for block in m["content"])


def _past_tools(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """toolSpecs for the tools named in the history's toolUse blocks, in order of first use."""
    names = dict.fromkeys(block["toolUse"]["name"] for m in messages for block in m["content"] if "toolUse" in block)
    return [{"toolSpec": {"name": name, "description": PAST_TOOL_NOTE,
                          "inputSchema": {"json": {"type": "object", "properties": {}}}}} for name in names]


def _tools(parsed: CanonicalRequest, out: _Builder, body: dict[str, Any], options: dict[str, Any], plan: Plan,
           claude: bool) -> None:
    """Set `toolConfig` (and `outputConfig`).

    For a Claude model the `outputConfig` schema is narrowed to what Claude's structured output
    accepts (as the Anthropic adapter does); other models get the client's schema unchanged.
    """
    req = parsed.req
    tools_in = [t for t in req.tools or () if t.get("type") == "function"]
    choice = req.tool_choice
    converse_choice: dict[str, Any] | None = None
    if choice == "none":
        # Converse has no "none": leave the tools out, unless the history holds tool blocks, which
        # Bedrock only accepts with a toolConfig (then the model may still call one; documented).
        if not _has_tool_blocks(out.messages):
            tools_in = []
    elif choice == "required":
        converse_choice = {"any": {}}
    elif choice == "auto":
        converse_choice = {"auto": {}}
    elif isinstance(choice, dict):
        if choice.get("type") == "function":
            converse_choice = {"tool": {"name": choice["name"]}}
        elif choice.get("type") == "allowed_tools":
            allowed = {t.get("name") for t in choice.get("tools") or () if isinstance(t, dict)}
            tools_in = [t for t in tools_in if t.get("name") in allowed]
            if choice.get("mode") == "required":
                converse_choice = {"any": {}}
    strict = bool(options.get("strict_tools"))
    tools: list[dict[str, Any]] = []
    for tool in tools_in:
        spec: dict[str, Any] = {"name": tool["name"]}
        if tool.get("description"):
            spec["description"] = tool["description"]
        spec["inputSchema"] = {"json": tool.get("parameters") or {"type": "object", "properties": {}}}
        if strict and tool.get("strict") is not None:
            spec["strict"] = tool["strict"]
        tools.append({"toolSpec": spec})
        point = out.point(tool.get("cache_control"))
        if point:
            tools.append(point)

    fmt = req.text.format if req.text is not None else None
    if fmt and fmt.get("type") == "json_schema":
        if options.get("structured_output") == "tool":
            name = _json_tool_name(fmt["name"], tools_in)
            spec = {"name": name, "description": fmt.get("description") or
                    "Give the final answer by calling this tool with the answer as its input.",
                    "inputSchema": {"json": fmt["schema"]}}
            tools.append({"toolSpec": spec})
            plan.json_tool = name
            if converse_choice is None or "auto" in converse_choice:
                converse_choice = {"any": {}} if tools_in else {"tool": {"name": name}}
        else:
            json_schema = strict_schema(fmt["schema"]) if claude else fmt["schema"]
            schema: dict[str, Any] = {"schema": _encode(json_schema).decode(), "name": fmt["name"]}
            if fmt.get("description"):
                schema["description"] = fmt["description"]
            body["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": schema}}}
    if not any("toolSpec" in tool for tool in tools) and _has_tool_blocks(out.messages):
        # No tools to send (none given, tool_choice none, or allowed_tools filtered them all out),
        # but Bedrock only accepts toolUse / toolResult history with a toolConfig: declare the tools
        # the history used, without a toolChoice (Converse has no "none"; as for tool_choice none).
        tools = _past_tools(out.messages)
        converse_choice = None
    if tools:
        config: dict[str, Any] = {"tools": tools}
        if converse_choice is not None:
            config["toolChoice"] = converse_choice
        body["toolConfig"] = config


def _strict_tools(body: dict[str, Any], client_tools: list[dict[str, Any]] | None, model: str,
                  options: dict[str, Any]) -> None:
    """Claude's strict tool use, as on the Anthropic adapter (`claude_policy.strict_tool`).

    A function tool the client declared `strict: true` goes with `strict: true` and its schema
    narrowed to Claude's subset, on a model that takes it; otherwise `strict` is not sent (unless
    option `strict_tools: true` forwarded the client's value as is, for any model).
    """
    option = options.get("strict_tools")
    if option is True:
        return  # forwarded as given by _tools
    names = {tool["name"] for tool in client_tools or () if tool.get("type") == "function"
             and claude_policy.strict_tool(tool.get("strict"), model, option)}
    for tool in body.get("toolConfig", {}).get("tools", ()):
        spec = tool.get("toolSpec")
        # (Stand-ins for tools the history used, declared when none is sent, stay as they are.)
        if spec is not None and spec["name"] in names and spec.get("description") != PAST_TOOL_NOTE:
            spec["inputSchema"] = {"json": strict_schema(spec["inputSchema"]["json"])}
            spec["strict"] = True


def _json_tool_name(name: str, tools: list[dict[str, Any]]) -> str:
    taken = {t.get("name") for t in tools}
    name = name[:64]
    while name in taken:
        name = ("json_" + name)[:64]
    return name


def _reasoning(parsed: CanonicalRequest, model: str, family: str, options: dict[str, Any], body: dict[str, Any],
               extra: dict[str, Any]) -> int | None:
    """Put `reasoning.effort` in the model family's own field; returns the maxTokens to send."""
    req = parsed.req
    effort = req.reasoning.effort if req.reasoning is not None else None
    max_tokens = req.max_output_tokens
    if effort is None or effort == "none":
        return max_tokens
    style = reasoning_style(family, model, options)
    if style == "nova":
        extra["reasoningConfig"] = {"type": "enabled", "maxReasoningEffort": _NOVA_EFFORT[effort]}
    elif style == "openai":
        extra["reasoning_effort"] = _NOVA_EFFORT[effort]
    elif style in ("budget", "adaptive"):
        choice = body.get("toolConfig", {}).get("toolChoice") or {}
        thinking = claude_policy.thinking(
            effort, adaptive=style == "adaptive", budgets=options.get("thinking_budgets"),
            max_tokens=max_tokens, explicit=max_tokens is not None,
            forced_tool="any" in choice or "tool" in choice,
            tool_turn_without_thinking=_last_tool_turn_lacks_thinking(body["messages"]))
        if thinking is not None:
            extra["thinking"] = thinking.config()
            if thinking.effort is not None:
                body.setdefault("outputConfig", {})["effort"] = thinking.effort
            return thinking.max_tokens
    return max_tokens


def _last_tool_turn_lacks_thinking(messages: list[dict[str, Any]]) -> bool:
    """The last assistant turn calls tools but does not start with its reasoning block."""
    for message in reversed(messages):
        if message["role"] == "assistant":
            content = message["content"]
            return any("toolUse" in b for b in content) and "reasoningContent" not in content[0]
    return False


def _limit_cache_points(body: dict[str, Any]) -> None:
    """Keep Bedrock's limits: at most 4 cache points, and no 1h point after a 5m one.

    Which points stay and which become 1h is Claude's breakpoint policy (`claude_policy`), as in the
    Anthropic adapter; the request-level point is a block like the others, after all of them.
    """
    containers = [body.get("toolConfig", {}).get("tools", []), body.get("system", []),
                  *(message["content"] for message in body["messages"])]
    marks = [block for container in containers for block in container if "cachePoint" in block]
    keep = {id(marks[i]) for i in claude_policy.kept_breakpoints(len(marks), MAX_CACHE_POINTS)}
    if len(keep) < len(marks):
        for container in containers:
            container[:] = [b for b in container if "cachePoint" not in b or id(b) in keep]
        marks = [block for block in marks if id(block) in keep]
    for block in marks[:claude_policy.one_hour_prefix([block["cachePoint"].get("ttl") for block in marks])]:
        block["cachePoint"]["ttl"] = "1h"
