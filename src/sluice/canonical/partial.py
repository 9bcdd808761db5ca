"""The output a stream had produced when it broke: what a `response.failed` reports.

A stream that fails after content still owes the client everything it was shown: finished items
as they were, and the items still open (the message being written, a half-streamed tool call)
with the text their deltas carried, marked `incomplete`. Deltas are kept as pieces and joined only
if the stream fails, so following a stream costs one dict lookup per event.
"""

from __future__ import annotations

from typing import Any

Event = dict[str, Any]

# Delta event -> (its sub-index key, the item's part list, the field the deltas build); deltas
# of a whole item (tool call arguments) have no part.
_DELTAS = {
    "response.output_text.delta": ("content_index", "content", "text"),
    "response.refusal.delta": ("content_index", "content", "refusal"),
    "response.reasoning_text.delta": ("content_index", "content", "text"),
    "response.reasoning_summary_text.delta": ("summary_index", "summary", "text"),
    "response.function_call_arguments.delta": (None, None, "arguments"),
    "response.custom_tool_call_input.delta": (None, None, "input"),
}
_PART_ADDED = {"response.content_part.added": ("content_index", "content"),
               "response.reasoning_summary_part.added": ("summary_index", "summary")}


class PartialOutput:
    """Follows a stream's events; `output()` is the output so far, open items included."""

    __slots__ = ("_done", "_open", "_parts", "_pieces")

    def __init__(self) -> None:
        self._done: dict[int, dict[str, Any]] = {}
        self._open: dict[int, dict[str, Any]] = {}
        self._parts: dict[tuple[int, str, int], dict[str, Any]] = {}
        self._pieces: dict[tuple[int, str | None, int | None, str], list[str]] = {}

    def see(self, event: Event) -> None:
        kind = event["type"]
        delta = _DELTAS.get(kind)
        if delta is not None:
            sub, container, field = delta
            key = (event["output_index"], container, event.get(sub) if sub else None, field)
            pieces = self._pieces.get(key)
            if pieces is None:
                self._pieces[key] = [event["delta"]]
            else:
                pieces.append(event["delta"])
        elif kind == "response.output_item.added":
            self._open[event["output_index"]] = event["item"]
        elif kind == "response.output_item.done":
            index = event["output_index"]
            self._done[index] = event["item"]
            self._open.pop(index, None)
        elif kind in _PART_ADDED:
            sub, container = _PART_ADDED[kind]
            self._parts[(event["output_index"], container, event[sub])] = event["part"]

    def output(self) -> list[dict[str, Any]]:
        items = dict(self._done)
        for index, item in self._open.items():
            items[index] = self._rebuild(index, item)
        return [items[i] for i in sorted(items)]

    def _rebuild(self, index: int, added: dict[str, Any]) -> dict[str, Any]:
        item = dict(added)
        if "status" in item or item.get("type") in ("message", "function_call", "custom_tool_call"):
            item["status"] = "incomplete"
        for container in ("content", "summary"):
            parts = sorted((sub, part) for (i, kind, sub), part in self._parts.items()
                           if i == index and kind == container)
            if parts:
                item[container] = [self._filled(index, container, sub, part) for sub, part in parts]
        for field in ("arguments", "input"):
            pieces = self._pieces.get((index, None, None, field))
            if pieces is not None:
                item[field] = (item.get(field) or "") + "".join(pieces)
        return item

    def _filled(self, index: int, container: str, sub: int, part: dict[str, Any]) -> dict[str, Any]:
        part = dict(part)
        field = "refusal" if part.get("type") == "refusal" else "text"
        pieces = self._pieces.get((index, container, sub, field))
        if pieces is not None:
            part[field] = (part.get(field) or "") + "".join(pieces)
        return part
