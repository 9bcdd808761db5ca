"""Build the exact Responses event sequence from provider-neutral deltas.

Adapters for wire protocols other than OpenAI Responses feed this builder with what they read
(text, refusal, reasoning, tool-call pieces, whole items); it opens and closes output items and
content parts in the order the Responses API defines, so every such stream is well formed by
construction: an item is `added` before its deltas and `done` after them, and the output it
accumulates is exactly what the terminal event carries.

Events are returned without `sequence_number` and without the lifecycle events
(`response.created`, `in_progress`): the pipeline sends those once a stream has content, and the
HTTP surface numbers everything it sends.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec

from sluice.canonical.ids import new_id

if TYPE_CHECKING:
    from sluice.canonical.tools import ToolMap

Event = dict[str, Any]


class _Message:
    __slots__ = ("index", "item", "kind", "part")

    def __init__(self, item: dict[str, Any], index: int) -> None:
        self.item = item
        self.index = index
        self.part: dict[str, Any] | None = None
        self.kind: str | None = None  # "output_text" | "refusal"


class _Reasoning:
    __slots__ = ("index", "item", "summary_open", "text_open")

    def __init__(self, item: dict[str, Any], index: int) -> None:
        self.item = item
        self.index = index
        self.summary_open = False
        self.text_open = False


class _Call:
    __slots__ = ("index", "input", "item")

    def __init__(self, item: dict[str, Any], index: int, input: _InputField | None = None) -> None:
        self.item = item
        self.index = index
        # A custom tool call that arrives as a function call's JSON arguments (`{"input": ...}`).
        self.input = input


class ResponseEventBuilder:
    """Accumulates the response output while producing its stream events."""

    def __init__(self, tools: ToolMap | None = None) -> None:
        self.output: list[dict[str, Any]] = []
        self._message: _Message | None = None
        self._reasoning: _Reasoning | None = None
        self._calls: dict[Any, _Call] = {}
        # Wire names of flattened tools (canonical/tools.py): calls to them are given back as the
        # client declared them, namespaced function calls and custom tool calls.
        self._tools = tools

    # --- end -------------------------------------------------------------------------------

    def finish(self, *, incomplete: bool = False) -> list[Event]:
        """Close everything still open (in output order)."""
        status = "incomplete" if incomplete else "completed"
        events: list[Event] = []
        open_items: list[tuple[int, str, Any]] = []
        if self._message:
            open_items.append((self._message.index, "message", None))
        if self._reasoning:
            open_items.append((self._reasoning.index, "reasoning", None))
        open_items.extend((call.index, "call", key) for key, call in self._calls.items())
        for _, kind, key in sorted(open_items, key=lambda entry: entry[0]):
            if kind == "message":
                events += self._close_message(status)
            elif kind == "reasoning":
                events += self._close_reasoning()
            else:
                events += self._close_call(key, status)
        return events

    # --- message text ------------------------------------------------------------------------

    def text(self, delta: str, logprobs: list[dict[str, Any]] | None = None) -> list[Event]:
        events = self._ensure_part("output_text")
        msg = self._message
        assert msg is not None and msg.part is not None
        msg.part["text"] += delta
        if logprobs:
            msg.part["logprobs"].extend(logprobs)
        if delta or logprobs:
            events.append({
                "type": "response.output_text.delta",
                "item_id": msg.item["id"],
                "output_index": msg.index,
                "content_index": len(msg.item["content"]) - 1,
                "delta": delta,
                "logprobs": logprobs or [],
            })
        return events

    def refusal(self, delta: str) -> list[Event]:
        events = self._ensure_part("refusal")
        msg = self._message
        assert msg is not None and msg.part is not None
        msg.part["refusal"] += delta
        events.append({
            "type": "response.refusal.delta",
            "item_id": msg.item["id"],
            "output_index": msg.index,
            "content_index": len(msg.item["content"]) - 1,
            "delta": delta,
        })
        return events

    def annotation(self, annotation: dict[str, Any]) -> list[Event]:
        events = self._ensure_part("output_text")
        msg = self._message
        assert msg is not None and msg.part is not None
        annotations = msg.part["annotations"]
        annotations.append(annotation)
        events.append({
            "type": "response.output_text.annotation.added",
            "item_id": msg.item["id"],
            "output_index": msg.index,
            "content_index": len(msg.item["content"]) - 1,
            "annotation_index": len(annotations) - 1,
            "annotation": annotation,
        })
        return events

    def _ensure_part(self, kind: str) -> list[Event]:
        events: list[Event] = []
        if self._message is None:
            events += self._close_others(keep="message")
            item = {"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
                    "content": []}
            self._message = _Message(item, len(self.output))
            self.output.append(item)
            events.append({"type": "response.output_item.added", "output_index": self._message.index,
                           "item": {**item, "content": []}})
        msg = self._message
        if msg.kind != kind:
            if msg.part is not None:
                events += self._close_part()
            part: dict[str, Any] = (
                {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                if kind == "output_text"
                else {"type": "refusal", "refusal": ""}
            )
            msg.part, msg.kind = part, kind
            msg.item["content"].append(part)
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []} if kind == "output_text" \
                else {"type": "refusal", "refusal": ""}
            events.append({"type": "response.content_part.added", "item_id": msg.item["id"],
                           "output_index": msg.index, "content_index": len(msg.item["content"]) - 1,
                           "part": empty})
        return events

    def _close_part(self) -> list[Event]:
        msg = self._message
        assert msg is not None and msg.part is not None
        part, index = msg.part, len(msg.item["content"]) - 1
        common = {"item_id": msg.item["id"], "output_index": msg.index, "content_index": index}
        if msg.kind == "output_text":
            done: Event = {"type": "response.output_text.done", **common, "text": part["text"],
                           "logprobs": part["logprobs"]}
        else:
            done = {"type": "response.refusal.done", **common, "refusal": part["refusal"]}
        msg.part = msg.kind = None
        return [done, {"type": "response.content_part.done", **common, "part": dict(part)}]

    def _close_message(self, status: str = "completed") -> list[Event]:
        msg = self._message
        assert msg is not None
        events = self._close_part() if msg.part is not None else []
        msg.item["status"] = status
        self._message = None
        return [*events, {"type": "response.output_item.done", "output_index": msg.index, "item": msg.item}]

    # --- reasoning ---------------------------------------------------------------------------

    def reasoning_summary(self, delta: str, *, new_part: bool = False) -> list[Event]:
        """Reasoning summary text; `new_part` starts another summary part in the same item."""
        events = self._ensure_reasoning()
        rs = self._reasoning
        assert rs is not None
        summary = rs.item["summary"]
        if rs.summary_open and new_part:
            events += self._close_summary_part()
        if not rs.summary_open:
            summary.append({"type": "summary_text", "text": ""})
            rs.summary_open = True
            events.append({"type": "response.reasoning_summary_part.added", "item_id": rs.item["id"],
                           "output_index": rs.index, "summary_index": len(summary) - 1,
                           "part": {"type": "summary_text", "text": ""}})
        summary[-1]["text"] += delta
        events.append({"type": "response.reasoning_summary_text.delta", "item_id": rs.item["id"],
                       "output_index": rs.index, "summary_index": len(summary) - 1, "delta": delta})
        return events

    def reasoning_text(self, delta: str) -> list[Event]:
        """Raw reasoning text (chain of thought some servers stream), as `reasoning_text` content."""
        events = self._ensure_reasoning()
        rs = self._reasoning
        assert rs is not None
        content = rs.item.setdefault("content", [])
        if not rs.text_open:
            content.append({"type": "reasoning_text", "text": ""})
            rs.text_open = True
            events.append({"type": "response.content_part.added", "item_id": rs.item["id"],
                           "output_index": rs.index, "content_index": len(content) - 1,
                           "part": {"type": "reasoning_text", "text": ""}})
        content[-1]["text"] += delta
        events.append({"type": "response.reasoning_text.delta", "item_id": rs.item["id"], "output_index": rs.index,
                       "content_index": len(content) - 1, "delta": delta})
        return events

    def reasoning_signature(self, encrypted_content: str) -> list[Event]:
        """Attach the provider's opaque reasoning state (signature) to the open reasoning item."""
        events = self._ensure_reasoning()
        assert self._reasoning is not None
        self._reasoning.item["encrypted_content"] = encrypted_content
        return events

    def begin_reasoning(self) -> list[Event]:
        """Open a reasoning item even before (or without) any text, e.g. for redacted thinking."""
        return self._ensure_reasoning()

    def end_reasoning(self) -> list[Event]:
        """Close the open reasoning item, so that the next reasoning delta starts a new one."""
        return self._close_reasoning() if self._reasoning is not None else []

    def _ensure_reasoning(self) -> list[Event]:
        if self._reasoning is not None:
            return []
        events = self._close_others(keep="reasoning")
        item: dict[str, Any] = {"id": new_id("rs"), "type": "reasoning", "summary": []}
        self._reasoning = _Reasoning(item, len(self.output))
        self.output.append(item)
        events.append({"type": "response.output_item.added", "output_index": self._reasoning.index,
                       "item": {"id": item["id"], "type": "reasoning", "summary": []}})
        return events

    def _close_summary_part(self) -> list[Event]:
        rs = self._reasoning
        assert rs is not None
        index = len(rs.item["summary"]) - 1
        part = rs.item["summary"][index]
        rs.summary_open = False
        common = {"item_id": rs.item["id"], "output_index": rs.index, "summary_index": index}
        return [{"type": "response.reasoning_summary_text.done", **common, "text": part["text"]},
                {"type": "response.reasoning_summary_part.done", **common, "part": dict(part)}]

    def _close_reasoning(self) -> list[Event]:
        rs = self._reasoning
        assert rs is not None
        events = self._close_summary_part() if rs.summary_open else []
        if rs.text_open:
            content = rs.item["content"]
            common = {"item_id": rs.item["id"], "output_index": rs.index, "content_index": len(content) - 1}
            events += [{"type": "response.reasoning_text.done", **common, "text": content[-1]["text"]},
                       {"type": "response.content_part.done", **common, "part": dict(content[-1])}]
            rs.text_open = False
        self._reasoning = None
        return [*events, {"type": "response.output_item.done", "output_index": rs.index, "item": rs.item}]

    # --- function calls ----------------------------------------------------------------------

    def tool_call_start(self, key: Any, call_id: str, name: str) -> list[Event]:
        """Open a function_call item; `key` tells parallel calls apart (e.g. the chat `index`).

        `name` is the name on the wire: a flattened tool's call becomes the item the client
        declared, a function_call with its `namespace` or a custom_tool_call whose `input` is read
        from the arguments (`{"input": ...}`) as they arrive.
        """
        target = self._tools.lookup(name) if self._tools is not None else None
        if target is not None and target.custom:
            return self._open_custom(key, call_id, target.name, target.namespace, _InputField())
        events = self._close_others(keep="call")
        item: dict[str, Any] = {"id": new_id("fc"), "type": "function_call", "status": "in_progress",
                                "call_id": call_id, "name": name, "arguments": ""}
        if target is not None:
            item["name"] = target.name
            if target.namespace is not None:
                item["namespace"] = target.namespace
        call = _Call(item, len(self.output))
        self._calls[key] = call
        self.output.append(item)
        events.append({"type": "response.output_item.added", "output_index": call.index, "item": dict(item)})
        return events

    def tool_call_arguments(self, key: Any, delta: str) -> list[Event]:
        call = self._calls.get(key)
        if call is None or not delta:
            return []
        if call.item["type"] == "custom_tool_call":
            if call.input is None:
                return self.custom_tool_call_input(key, delta)
            return self._input_delta(call, call.input.feed(delta))
        call.item["arguments"] += delta
        return [{"type": "response.function_call_arguments.delta", "item_id": call.item["id"],
                 "output_index": call.index, "delta": delta}]

    def custom_tool_call_start(self, key: Any, call_id: str, name: str, namespace: str | None = None
                               ) -> list[Event]:
        """Open a custom_tool_call item (a protocol with native custom tools); `input` follows.

        `name` is the name on the wire: a namespaced custom tool's is given back as the client declared it.
        """
        target = self._tools.lookup(name) if self._tools is not None else None
        if target is not None:
            name, namespace = target.name, target.namespace
        return self._open_custom(key, call_id, name, namespace, None)

    def custom_tool_call_input(self, key: Any, delta: str) -> list[Event]:
        """A piece of a custom tool call's input, as the model wrote it."""
        call = self._calls.get(key)
        if call is None or call.item["type"] != "custom_tool_call" or call.input is not None:
            return []
        return self._input_delta(call, delta)

    def _open_custom(self, key: Any, call_id: str, name: str, namespace: str | None,
                     field: _InputField | None) -> list[Event]:
        events = self._close_others(keep="call")
        item: dict[str, Any] = {"id": new_id("ctc"), "type": "custom_tool_call", "status": "in_progress",
                                "call_id": call_id, "name": name, "input": ""}
        if namespace is not None:
            item["namespace"] = namespace
        call = _Call(item, len(self.output), field)
        self._calls[key] = call
        self.output.append(item)
        events.append({"type": "response.output_item.added", "output_index": call.index, "item": dict(item)})
        return events

    @staticmethod
    def _input_delta(call: _Call, delta: str) -> list[Event]:
        if not delta:
            return []
        call.item["input"] += delta
        return [{"type": "response.custom_tool_call_input.delta", "item_id": call.item["id"],
                 "output_index": call.index, "delta": delta}]

    def has_call(self, key: Any) -> bool:
        return key in self._calls

    def end_tool_call(self, key: Any) -> list[Event]:
        return self._close_call(key) if key in self._calls else []

    def _close_call(self, key: Any, status: str = "completed") -> list[Event]:
        call = self._calls.pop(key)
        item = call.item
        if item["type"] == "custom_tool_call":
            events: list[Event] = []
            if call.input is not None:
                whole = call.input.value()
                if whole.startswith(item["input"]):
                    events += self._input_delta(call, whole[len(item["input"]):])
                item["input"] = whole
            item["status"] = status
            return [*events,
                    {"type": "response.custom_tool_call_input.done", "item_id": item["id"],
                     "output_index": call.index, "input": item["input"]},
                    {"type": "response.output_item.done", "output_index": call.index, "item": item}]
        item["status"] = status
        return [{"type": "response.function_call_arguments.done", "item_id": item["id"], "output_index": call.index,
                 "name": item["name"], "arguments": item["arguments"]},
                {"type": "response.output_item.done", "output_index": call.index, "item": item}]

    # --- whole items -------------------------------------------------------------------------

    def item(self, item: dict[str, Any]) -> list[Event]:
        """A complete output item (server tool results, non-incremental parts): added, then done."""
        events = self._close_others(keep=None)
        index = len(self.output)
        self.output.append(item)
        return [*events, {"type": "response.output_item.added", "output_index": index, "item": item},
                {"type": "response.output_item.done", "output_index": index, "item": item}]

    def _close_others(self, keep: str | None) -> list[Event]:
        # Text and reasoning are sequential in the Responses stream: starting one kind of item
        # closes the other. Parallel function calls may stay open together.
        events: list[Event] = []
        if keep != "message" and self._message is not None:
            events += self._close_message()
        if keep != "reasoning" and self._reasoning is not None:
            events += self._close_reasoning()
        if keep not in ("call",) and self._calls:
            for key in list(self._calls):
                events += self._close_call(key)
        return events


_INPUT_KEY = re.compile(r'"input"\s*:\s*"')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class _InputField:
    """The string `input` of JSON arguments received piece by piece, decoded as far as it has come.

    A custom tool flattened into a function (canonical/tools.py) is called with arguments
    `{"input": "..."}`; the client expects the input itself, streamed. `feed` returns the newly
    decoded characters (an escape split across pieces waits for its end); `value` the whole input
    once the arguments are complete.
    """

    __slots__ = ("_done", "_pos", "_raw", "_text")

    def __init__(self) -> None:
        self._raw = ""
        self._pos = -1  # where the string's next undecoded character is; -1 before it starts
        self._done = False
        self._text: list[str] = []

    def feed(self, piece: str) -> str:
        self._raw += piece
        if self._done:
            return ""
        raw = self._raw
        if self._pos < 0:
            match = _INPUT_KEY.search(raw)
            if match is None:
                return ""
            self._pos = match.end()
        out: list[str] = []
        i, end = self._pos, len(raw)
        while i < end:
            char = raw[i]
            if char == '"':
                self._done = True
                i += 1
                break
            if char != "\\":
                out.append(char)
                i += 1
                continue
            if i + 1 >= end:
                break
            escape = raw[i + 1]
            if escape != "u":
                out.append(_ESCAPES.get(escape, escape))
                i += 2
                continue
            if i + 6 > end:
                break
            try:
                code = int(raw[i + 2:i + 6], 16)
            except ValueError:
                self._done = True  # not JSON after all: `value` sorts it out
                break
            if 0xD800 <= code < 0xDC00:  # a high surrogate: the pair makes one character
                if i + 12 > end:
                    break
                try:
                    low = int(raw[i + 8:i + 12], 16) if raw[i + 6:i + 8] == "\\u" else -1
                except ValueError:
                    low = -1
                if 0xDC00 <= low < 0xE000:
                    out.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
                    i += 12
                    continue
            out.append(chr(code))
            i += 6
        self._pos = i
        text = "".join(out)
        self._text.append(text)
        return text

    def value(self) -> str:
        """The whole input: `input` of the arguments object (or its only string value); arguments
        that are not such an object are taken as the input itself."""
        try:
            args = msgspec.json.decode(self._raw)
        except msgspec.DecodeError:
            return "".join(self._text) if self._pos >= 0 else self._raw
        if isinstance(args, dict):
            if isinstance(args.get("input"), str):
                return args["input"]
            strings = [value for value in args.values() if isinstance(value, str)]
            if len(strings) == 1:
                return strings[0]
        return args if isinstance(args, str) else self._raw
