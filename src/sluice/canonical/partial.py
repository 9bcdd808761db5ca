"""The output a stream had produced when it broke: what a `response.failed` reports.

A stream that fails after content still owes the client everything it was shown: finished items
as they were, and the items still open (the message being written, a half-streamed tool call)
with the text their deltas carried, marked `incomplete`.

Following a stream must cost next to nothing, since almost every stream completes: the events of
the items still open are only kept (`events.append`), and folded into items only if the stream
fails. Once no item is open they are dropped, so a long stream keeps nothing it no longer needs.
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
    """Fed a stream's events: `item_added` / `item_done` for those two, `events.append` for the rest."""

    __slots__ = ("_done", "_open", "events")

    def __init__(self) -> None:
        self.events: list[Event] = []  # since the last moment no item was open
        self._done: dict[int, dict[str, Any]] = {}
        self._open = 0

    def item_added(self, event: Event) -> None:
        self._open += 1
        self.events.append(event)

    def item_done(self, event: Event) -> None:
        self._done[event["output_index"]] = event["item"]
        self._open -= 1
        if self._open <= 0:
            self._open = 0
            self.events.clear()
        else:
            self.events.append(event)

    def output(self) -> list[dict[str, Any]]:
        """Finished items, then the open ones rebuilt from their events, in output order."""
        items = dict(self._done)
        items.update(_fold(self.events, self._done))
        return [items[i] for i in sorted(items)]


def _fold(events: list[Event], done: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    added: dict[int, dict[str, Any]] = {}
    parts: dict[tuple[int, str, int], dict[str, Any]] = {}
    pieces: dict[tuple[int, str | None, int | None, str], list[str]] = {}
    for event in events:
        kind = event["type"]
        delta = _DELTAS.get(kind)
        if delta is not None:
            sub, container, field = delta
            key = (event["output_index"], container, event.get(sub) if sub else None, field)
            pieces.setdefault(key, []).append(event["delta"])
        elif kind == "response.output_item.added":
            added[event["output_index"]] = event["item"]
        elif kind in _PART_ADDED:
            sub, container = _PART_ADDED[kind]
            parts[(event["output_index"], container, event[sub])] = event["part"]
    return {index: _rebuild(index, item, parts, pieces) for index, item in added.items() if index not in done}


def _rebuild(index: int, added: dict[str, Any], parts: dict[tuple[int, str, int], dict[str, Any]],
             pieces: dict[tuple[int, str | None, int | None, str], list[str]]) -> dict[str, Any]:
    item = dict(added)
    if "status" in item or item.get("type") in ("message", "function_call", "custom_tool_call"):
        item["status"] = "incomplete"
    for container in ("content", "summary"):
        mine = sorted((sub, part) for (i, kind, sub), part in parts.items() if i == index and kind == container)
        if mine:
            item[container] = [_filled(part, pieces.get((index, container, sub, _text_field(part))))
                               for sub, part in mine]
    for field in ("arguments", "input"):
        found = pieces.get((index, None, None, field))
        if found is not None:
            item[field] = (item.get(field) or "") + "".join(found)
    return item


def _text_field(part: dict[str, Any]) -> str:
    return "refusal" if part.get("type") == "refusal" else "text"


def _filled(part: dict[str, Any], found: list[str] | None) -> dict[str, Any]:
    part = dict(part)
    if found is not None:
        field = _text_field(part)
        part[field] = (part.get(field) or "") + "".join(found)
    return part
