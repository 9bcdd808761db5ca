"""What a broken stream had produced: finished items as they were, open ones with their deltas."""

from __future__ import annotations

from sluice.canonical.partial import PartialOutput
from sluice.canonical.stream import ResponseEventBuilder


def _follow(events: list[dict]) -> PartialOutput:
    """Fed as the pipeline feeds it."""
    partial = PartialOutput()
    for event in events:
        if event["type"] == "response.output_item.added":
            partial.item_added(event)
        elif event["type"] == "response.output_item.done":
            partial.item_done(event)
        else:
            partial.events.append(event)
    return partial


def test_open_items_keep_what_their_deltas_carried() -> None:
    builder = ResponseEventBuilder()
    events = builder.reasoning_summary("Thinking about ")
    events += builder.reasoning_summary("the weather.")
    events += builder.text("It is ")
    events += builder.text("sunny")
    events += builder.tool_call_start(0, "call_1", "get_weather")
    events += builder.tool_call_arguments(0, '{"city": ')
    events += builder.tool_call_arguments(0, '"Par')  # the stream breaks here
    output = _follow(events).output()
    reasoning, message, call = output
    assert reasoning["type"] == "reasoning" and reasoning["summary"][0]["text"] == "Thinking about the weather."
    assert message["status"] == "completed"  # closed when the call began: kept as it was
    assert message["content"][0]["text"] == "It is sunny"
    assert call == {**call, "type": "function_call", "status": "incomplete", "call_id": "call_1",
                    "arguments": '{"city": "Par'}


def test_a_refusal_part_and_a_text_part_of_an_open_message() -> None:
    builder = ResponseEventBuilder()
    events = builder.text("Partial answer. ") + builder.refusal("I can't ") + builder.refusal("go on.")
    (message,) = _follow(events).output()
    assert message["status"] == "incomplete"
    assert [(p["type"], p.get("text") or p.get("refusal")) for p in message["content"]] == [
        ("output_text", "Partial answer. "), ("refusal", "I can't go on.")]


def test_finished_stream_output_equals_the_builders() -> None:
    builder = ResponseEventBuilder()
    events = builder.text("Hello") + builder.tool_call_start(0, "c", "f") + builder.tool_call_arguments(0, "{}")
    events += builder.finish()
    assert _follow(events).output() == builder.output


def test_nothing_is_kept_once_no_item_is_open() -> None:
    builder = ResponseEventBuilder()
    events = builder.text("a" * 10) + builder.finish()
    partial = _follow(events)
    assert partial.events == []  # a long stream does not accumulate what it no longer needs
