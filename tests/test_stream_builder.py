"""`ResponseEventBuilder` (canonical/stream.py) directly: every non-OpenAI stream is built by it.

Each scenario feeds the builder what an adapter reads and checks the exact events, then `check`
holds every stream to the rules clients rely on: each event is a valid `ResponseStreamEvent` of
the openai SDK; an item is `added` before any of its events and `done` after all of them, and so is
each content / summary part; the deltas add up to the `.done` texts; and `builder.output` is
exactly the items the `output_item.done` events carried, in output order.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from sluice.canonical.stream import ResponseEventBuilder
from sluice.canonical.tools import ToolMap

Event = dict[str, Any]

_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
CITATION = {"type": "url_citation", "url": "https://example.com/", "title": "Example", "start_index": 4,
            "end_index": 15}
SEARCH = {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "q"}}
# Delta event type -> (its field, the `.done` event type, the field that holds the whole text there).
_DELTAS = {
    "response.output_text.delta": ("content_index", "response.output_text.done", "text"),
    "response.refusal.delta": ("content_index", "response.refusal.done", "refusal"),
    "response.reasoning_text.delta": ("content_index", "response.reasoning_text.done", "text"),
    "response.reasoning_summary_text.delta": ("summary_index", "response.reasoning_summary_text.done", "text"),
    "response.function_call_arguments.delta": (None, "response.function_call_arguments.done", "arguments"),
    "response.custom_tool_call_input.delta": (None, "response.custom_tool_call_input.done", "input"),
}


class Stream:
    """A builder whose events are recorded as a client receives them: each batch serialized when
    it is returned, so a later change to the builder's state cannot rewrite what was sent."""

    def __init__(self, tools: ToolMap | None = None) -> None:
        self.builder = ResponseEventBuilder(tools)
        self.events: list[Event] = []

    @property
    def output(self) -> list[dict[str, Any]]:
        return self.builder.output

    def __getattr__(self, name: str) -> Callable[..., list[Event]]:
        method = getattr(self.builder, name)

        def send(*args: Any, **kwargs: Any) -> list[Event]:
            batch: list[Event] = json.loads(json.dumps(method(*args, **kwargs)))
            self.events += batch
            return batch

        return send


def check(stream: Stream) -> None:
    """The rules every stream the builder makes must keep (module docstring)."""
    builder, events = stream.builder, stream.events
    for number, event in enumerate(events):
        # The HTTP layer adds sequence_number; everything else must already be the SDK's shape.
        parsed = _EVENT.validate_python({**event, "sequence_number": number})
        assert parsed.type == event["type"]
    _check_lifecycles(events)
    _check_deltas(events)
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert added == list(range(len(builder.output))), "items are added in output order, once each"
    done = {e["output_index"]: e["item"] for e in events if e["type"] == "response.output_item.done"}
    assert [done[i] for i in sorted(done)] == builder.output


def _check_lifecycles(events: list[Event]) -> None:
    # An item's (or a part's) events: `added` first, `done` last, nothing for it after `done`.
    scopes: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for event in events:
        index = event.get("output_index")
        if index is None:
            continue
        scopes[(index,)].append(event["type"])
        for field in ("content_index", "summary_index"):
            if field in event:
                scopes[(index, field, event[field])].append(event["type"])
    for scope, kinds in scopes.items():
        if len(scope) == 1:
            assert kinds[0] == "response.output_item.added" and kinds[-1] == "response.output_item.done", scope
            assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 1
        elif scope[1] == "content_index":
            assert kinds[0] == "response.content_part.added" and kinds[-1] == "response.content_part.done", scope
        else:
            assert kinds[0] == "response.reasoning_summary_part.added", scope
            assert kinds[-1] == "response.reasoning_summary_part.done", scope


def _check_deltas(events: list[Event]) -> None:
    # The deltas of a part (or of a call's arguments) add up to the text its `.done` event carries.
    texts: dict[tuple[Any, ...], str] = defaultdict(str)
    for event in events:
        kind = event["type"]
        if kind in _DELTAS:
            field, done, _ = _DELTAS[kind]
            texts[(done, event["output_index"], event.get(field))] += event["delta"]
    finals = {}
    for event in events:
        for field, done, whole in _DELTAS.values():
            if event["type"] == done:
                finals[(done, event["output_index"], event.get(field))] = event[whole]
    assert dict(texts) == {key: value for key, value in finals.items() if value}


def trace(events: list[Event]) -> list[tuple[Any, ...]]:
    """(type, output_index, content or summary index) of each event, to compare whole sequences."""
    return [(e["type"].removeprefix("response."), e.get("output_index"),
             e.get("content_index", e.get("summary_index"))) for e in events]


# --- scenarios ------------------------------------------------------------------------------------


def test_text_then_tool_call_then_text() -> None:
    s = Stream()
    s.text("Let me ")
    s.text("check.")
    s.tool_call_start(0, "call_1", "get_weather")
    s.tool_call_arguments(0, '{"city": ')
    s.tool_call_arguments(0, '"Paris"}')
    s.end_tool_call(0)
    s.text("It is sunny.")
    s.finish()
    assert trace(s.events) == [
        ("output_item.added", 0, None), ("content_part.added", 0, 0),
        ("output_text.delta", 0, 0), ("output_text.delta", 0, 0),
        ("output_text.done", 0, 0), ("content_part.done", 0, 0), ("output_item.done", 0, None),
        ("output_item.added", 1, None),
        ("function_call_arguments.delta", 1, None), ("function_call_arguments.delta", 1, None),
        ("function_call_arguments.done", 1, None), ("output_item.done", 1, None),
        ("output_item.added", 2, None), ("content_part.added", 2, 0), ("output_text.delta", 2, 0),
        ("output_text.done", 2, 0), ("content_part.done", 2, 0), ("output_item.done", 2, None),
    ]
    first, call, second = s.output
    assert first["content"][0]["text"] == "Let me check." and second["content"][0]["text"] == "It is sunny."
    assert (call["call_id"], call["name"], call["arguments"]) == ("call_1", "get_weather", '{"city": "Paris"}')
    assert [item["status"] for item in s.output] == ["completed"] * 3
    assert len({item["id"] for item in s.output}) == 3
    check(s)


def test_parallel_tool_calls_stay_open_together() -> None:
    s = Stream()
    s.tool_call_start(0, "call_a", "get_weather")
    s.tool_call_start(("id", "x"), "call_b", "get_time")  # any key tells calls apart (Mistral: the id)
    s.tool_call_arguments(("id", "x"), '{"tz": "CET"}')
    s.tool_call_arguments(0, '{"city": "Rome"}')
    s.finish()
    assert trace(s.events) == [
        ("output_item.added", 0, None), ("output_item.added", 1, None),
        ("function_call_arguments.delta", 1, None), ("function_call_arguments.delta", 0, None),
        # finish() closes them in output order.
        ("function_call_arguments.done", 0, None), ("output_item.done", 0, None),
        ("function_call_arguments.done", 1, None), ("output_item.done", 1, None),
    ]
    assert [(c["call_id"], c["arguments"]) for c in s.output] == [("call_a", '{"city": "Rome"}'),
                                                                  ("call_b", '{"tz": "CET"}')]
    check(s)


def test_reasoning_summary_parts() -> None:
    s = Stream()
    s.reasoning_summary("**Plan**")
    s.reasoning_summary(" Look it up.")
    s.reasoning_summary("**Check**", new_part=True)
    s.reasoning_summary(" Done.")
    s.reasoning_signature("sealed-state")
    s.end_reasoning()
    s.text("Answer.")
    s.finish()
    assert trace(s.events)[:12] == [
        ("output_item.added", 0, None), ("reasoning_summary_part.added", 0, 0),
        ("reasoning_summary_text.delta", 0, 0), ("reasoning_summary_text.delta", 0, 0),
        ("reasoning_summary_text.done", 0, 0), ("reasoning_summary_part.done", 0, 0),
        ("reasoning_summary_part.added", 0, 1), ("reasoning_summary_text.delta", 0, 1),
        ("reasoning_summary_text.delta", 0, 1),
        ("reasoning_summary_text.done", 0, 1), ("reasoning_summary_part.done", 0, 1), ("output_item.done", 0, None),
    ]
    reasoning, message = s.output
    assert reasoning["summary"] == [{"type": "summary_text", "text": "**Plan** Look it up."},
                                    {"type": "summary_text", "text": "**Check** Done."}]
    assert reasoning["encrypted_content"] == "sealed-state"
    assert message["content"][0]["text"] == "Answer."
    check(s)


def test_reasoning_text_then_answer() -> None:
    s = Stream()
    s.reasoning_text("Thinking ")
    s.reasoning_text("hard.")
    s.text("Answer.")
    s.finish()
    assert trace(s.events)[:8] == [
        ("output_item.added", 0, None), ("content_part.added", 0, 0),
        ("reasoning_text.delta", 0, 0), ("reasoning_text.delta", 0, 0),
        # The answer's first text closes the reasoning item.
        ("reasoning_text.done", 0, 0), ("content_part.done", 0, 0), ("output_item.done", 0, None),
        ("output_item.added", 1, None),
    ]
    reasoning, message = s.output
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Thinking hard."}]
    assert reasoning["summary"] == []
    assert message["content"][0]["text"] == "Answer."
    check(s)


def test_refusal_after_text_is_a_second_part() -> None:
    s = Stream()
    s.text("I can tell you the weather, ")
    s.refusal("but not ")
    s.refusal("that.")
    s.finish()
    assert trace(s.events) == [
        ("output_item.added", 0, None), ("content_part.added", 0, 0), ("output_text.delta", 0, 0),
        ("output_text.done", 0, 0), ("content_part.done", 0, 0),
        ("content_part.added", 0, 1), ("refusal.delta", 0, 1), ("refusal.delta", 0, 1),
        ("refusal.done", 0, 1), ("content_part.done", 0, 1), ("output_item.done", 0, None),
    ]
    (message,) = s.output
    assert message["content"] == [
        {"type": "output_text", "text": "I can tell you the weather, ", "annotations": [], "logprobs": []},
        {"type": "refusal", "refusal": "but not that."}]
    check(s)


def test_annotations_on_the_open_text() -> None:
    s = Stream()
    second = {**CITATION, "url": "https://example.org/", "start_index": 20, "end_index": 31}
    s.text("See example.com and example.org.")
    s.annotation(CITATION)
    s.annotation(second)
    s.finish()
    added = [e for e in s.events if e["type"] == "response.output_text.annotation.added"]
    assert [(e["output_index"], e["content_index"], e["annotation_index"]) for e in added] == [(0, 0, 0), (0, 0, 1)]
    assert [e["annotation"] for e in added] == [CITATION, second]
    part_done = next(e for e in s.events if e["type"] == "response.content_part.done")
    assert part_done["part"]["annotations"] == [CITATION, second]
    assert s.output[0]["content"][0]["annotations"] == [CITATION, second]
    check(s)


def test_whole_item_between_messages() -> None:
    s = Stream()
    s.text("Searching.")
    s.item(SEARCH)
    s.text("Found it.")
    s.finish()
    assert trace(s.events)[4:9] == [
        ("content_part.done", 0, 0), ("output_item.done", 0, None),
        # A whole item closes the open message, then is added and done at once.
        ("output_item.added", 1, None), ("output_item.done", 1, None), ("output_item.added", 2, None),
    ]
    assert [item["type"] for item in s.output] == ["message", "web_search_call", "message"]
    assert s.output[1] == SEARCH
    check(s)


def test_finish_incomplete_marks_open_items_only() -> None:
    s = Stream()
    s.text("Calling.")
    s.tool_call_start(0, "call_1", "get_weather")
    s.tool_call_arguments(0, '{"ci')
    s.finish(incomplete=True)
    message, call = s.output
    assert message["status"] == "completed"  # closed when the call started: it was whole
    assert call["status"] == "incomplete" and call["arguments"] == '{"ci'
    done = [e["item"]["status"] for e in s.events if e["type"] == "response.output_item.done"]
    assert done == ["completed", "incomplete"]
    check(s)

    s = Stream()
    s.text("Cut sho")
    s.finish(incomplete=True)
    assert s.output[0]["status"] == "incomplete" and s.output[0]["content"][0]["text"] == "Cut sho"
    check(s)


def test_finish_closes_once() -> None:
    s = Stream()
    s.text("Hi.")
    assert s.end_reasoning() == [] and s.end_tool_call("unknown") == []  # nothing of theirs is open
    closing = s.finish()
    assert [e["type"] for e in closing] == ["response.output_text.done", "response.content_part.done",
                                            "response.output_item.done"]
    assert s.finish() == []
    check(s)


# --- custom tool calls and namespaced function calls ------------------------------------------------


def test_native_custom_tool_call_streams_its_input() -> None:
    # A protocol with custom tools (Chat Completions): the input arrives as it is.
    s = Stream()
    s.text("Patching.")
    s.custom_tool_call_start(0, "call_p", "apply_patch")
    s.custom_tool_call_input(0, "*** Begin Patch\n")
    s.custom_tool_call_input(0, "*** End Patch")
    s.finish()
    assert trace(s.events)[6:] == [
        ("output_item.added", 1, None),
        ("custom_tool_call_input.delta", 1, None), ("custom_tool_call_input.delta", 1, None),
        ("custom_tool_call_input.done", 1, None), ("output_item.done", 1, None),
    ]
    call = s.output[1]
    assert call["type"] == "custom_tool_call" and call["id"].startswith("ctc_")
    assert (call["call_id"], call["name"], call["input"], call["status"]) == (
        "call_p", "apply_patch", "*** Begin Patch\n*** End Patch", "completed")
    assert "namespace" not in call
    check(s)


def test_flattened_custom_tool_call_is_given_back_as_a_custom_tool_call() -> None:
    # The provider called the function standing in for the custom tool: its JSON arguments'
    # `input` string is decoded as it streams (escapes split across pieces included).
    tools = ToolMap()
    wire = tools.wire("apply_patch", custom=True)
    patch = '*** Begin Patch\n*** Add File: a.py\n+print("h\u00e9llo")\t\\ \U0001f600\n*** End Patch'
    arguments = json.dumps({"input": patch})
    s = Stream(tools)
    s.tool_call_start("k", "toolu_1", wire)
    for i in range(0, len(arguments), 3):
        s.tool_call_arguments("k", arguments[i:i + 3])
    s.end_tool_call("k")
    call = s.output[0]
    assert call["type"] == "custom_tool_call" and call["name"] == "apply_patch" and call["input"] == patch
    deltas = [e["delta"] for e in s.events if e["type"] == "response.custom_tool_call_input.delta"]
    assert len(deltas) > 10 and "".join(deltas) == patch  # streamed, not held to the end
    assert not any(e["type"].startswith("response.function_call") for e in s.events)
    check(s)


def test_flattened_custom_tool_call_with_unexpected_arguments() -> None:
    tools = ToolMap()
    wire = tools.wire("run", "shell", custom=True)
    s = Stream(tools)
    s.tool_call_start(0, "c1", wire)
    s.tool_call_arguments(0, '{"script": "ls -la"}')  # another key: its only string is the input
    s.tool_call_start(1, "c2", wire)
    s.tool_call_arguments(1, "not json")  # not an object at all: taken as the input
    s.finish()
    assert [(c["name"], c["namespace"], c["input"]) for c in s.output] == [("run", "shell", "ls -la"),
                                                                            ("run", "shell", "not json")]
    check(s)


def test_namespaced_function_call_carries_its_namespace() -> None:
    tools = ToolMap()
    wire = tools.wire("spawn_agent", "multi_agent_v1")
    assert wire == "multi_agent_v1__spawn_agent"
    s = Stream(tools)
    s.tool_call_start(0, "call_1", wire)
    s.tool_call_arguments(0, '{"task": "x"}')
    s.tool_call_start(1, "call_2", "plain_function")  # not flattened: as it is
    s.finish()
    first, second = s.output
    assert (first["name"], first["namespace"], first["arguments"]) == ("spawn_agent", "multi_agent_v1", '{"task": "x"}')
    assert second["name"] == "plain_function" and "namespace" not in second
    done = [e for e in s.events if e["type"] == "response.function_call_arguments.done"]
    assert [e["name"] for e in done] == ["spawn_agent", "plain_function"]
    check(s)


def test_custom_tool_call_cut_short_is_incomplete() -> None:
    tools = ToolMap()
    s = Stream(tools)
    s.tool_call_start(0, "c", tools.wire("apply_patch", custom=True))
    s.tool_call_arguments(0, '{"input": "*** Begin Pa')
    s.finish(incomplete=True)
    call = s.output[0]
    assert (call["status"], call["input"]) == ("incomplete", "*** Begin Pa")
    check(s)
