"""Read a gateway SSE response as (event name, JSON payload) pairs."""

from __future__ import annotations

import json
from typing import Any

import httpx


def read_events(resp: httpx.Response) -> list[dict[str, Any]]:
    events = []
    name = None
    for line in resp.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            payload = json.loads(line[6:])
            assert payload["type"] == name, "the event: line and the payload's type must agree"
            events.append(payload)
    return events


def assert_well_formed(events: list[dict[str, Any]]) -> None:
    """Sequence numbers from 0, one terminal event at the end, items added before deltas and done after."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    terminals = [e for e in events if e["type"] in ("response.completed", "response.incomplete", "response.failed")]
    assert len(terminals) == 1 and terminals[0] is events[-1]
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1
    open_items: set[int] = set()
    closed: set[int] = set()
    for event in events:
        index = event.get("output_index")
        if event["type"] == "response.output_item.added":
            assert index not in open_items and index not in closed
            open_items.add(index)
        elif event["type"] == "response.output_item.done":
            assert index in open_items
            open_items.remove(index)
            closed.add(index)
        elif index is not None:
            assert index in open_items, f"{event['type']} for an item that is not open"
