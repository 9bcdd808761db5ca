"""Gemini answers (one GenerateContentResponse, or its SSE chunks) -> Responses events and output.

`GeminiTranslator` serves both paths, so a stream's final response and the non-streaming body cannot
drift apart. It feeds the canonical `ResponseEventBuilder`: text -> message output_text (grounding
supports -> url_citation), thoughts -> reasoning summary, functionCall -> function_call (Vertex's
streamed `partialArgs` included), executableCode / codeExecutionResult -> code_interpreter_call,
Google Search -> web_search_call; `usageMetadata` -> canonical usage. Thought signatures are sealed
into reasoning items (the state is described in `gemini_request`).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import msgspec

from sluice.canonical.ids import new_id
from sluice.canonical.reasoning import seal
from sluice.canonical.request import CanonicalRequest
from sluice.canonical.stream import ResponseEventBuilder
from sluice.canonical.tools import ToolMap
from sluice.providers.base import Event
from sluice.providers.gemini_request import PROTOCOL

_encode = msgspec.json.encode
_decode = msgspec.json.decode

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


class GeminiTranslator:
    """GenerateContentResponse chunks (or one whole response) -> Responses events."""

    def __init__(self, parsed: CanonicalRequest, model: str, tools: ToolMap | None = None) -> None:
        self.builder = ResponseEventBuilder(tools)
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
        self._code_signatures: list[str] = []  # signatures on empty text parts inside that execution
        self._text: list[str] = []  # the open message's text, for grounding offsets
        self._queries: list[str] = []
        self._sources: list[dict[str, Any]] = []

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
        if not text and not logprobs and self._code is not None:
            # Gemini streams an empty text part between executableCode and its codeExecutionResult:
            # it is no content and must not split the execution into code-only and output-only items.
            # A signature on it is sealed after the execution's item ("previous part").
            if signature and self.keep_signatures:
                self._code_signatures.append(signature)
            return []
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
        return events + self._end_reasoning() + self._code_item(item)

    def _flush_code(self) -> list[Event]:
        if self._code is None:
            return []
        item, self._code = self._code, None
        self._rs_open = False
        return self._code_item(item)

    def _code_item(self, item: dict[str, Any]) -> list[Event]:
        """The code_interpreter_call item, then the signatures that arrived inside its execution."""
        events = self.builder.item(item)
        signatures, self._code_signatures = self._code_signatures, []
        if signatures:
            for signature in signatures:
                events += self._seal({"s": signature, "a": "p"})
            events += self._end_reasoning()
        return events

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
