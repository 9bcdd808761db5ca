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

from typing import Any

from sluice.canonical.ids import new_id

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
    __slots__ = ("index", "item")

    def __init__(self, item: dict[str, Any], index: int) -> None:
        self.item = item
        self.index = index


class ResponseEventBuilder:
    """Accumulates the response output while producing its stream events."""

    def __init__(self) -> None:
        self.output: list[dict[str, Any]] = []
        self._message: _Message | None = None
        self._reasoning: _Reasoning | None = None
        self._calls: dict[Any, _Call] = {}

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
        """Open a function_call item; `key` tells parallel calls apart (e.g. the chat `index`)."""
        events = self._close_others(keep="call")
        item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress", "call_id": call_id,
                "name": name, "arguments": ""}
        call = _Call(item, len(self.output))
        self._calls[key] = call
        self.output.append(item)
        events.append({"type": "response.output_item.added", "output_index": call.index, "item": dict(item)})
        return events

    def tool_call_arguments(self, key: Any, delta: str) -> list[Event]:
        call = self._calls.get(key)
        if call is None or not delta:
            return []
        call.item["arguments"] += delta
        return [{"type": "response.function_call_arguments.delta", "item_id": call.item["id"],
                 "output_index": call.index, "delta": delta}]

    def has_call(self, key: Any) -> bool:
        return key in self._calls

    def end_tool_call(self, key: Any) -> list[Event]:
        return self._close_call(key) if key in self._calls else []

    def _close_call(self, key: Any, status: str = "completed") -> list[Event]:
        call = self._calls.pop(key)
        call.item["status"] = status
        item = call.item
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
