"""`canonical/tools.py` directly: namespaces and custom tools flattened into functions, and back."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.canonical.request import parse_request
from sluice.canonical.tools import ToolMap, ToolTarget, flatten
from sluice.errors import InvalidRequest

PATCH = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n"
APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files.",
               "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch" LF'}}
CLOSE = {"type": "function", "name": "close_agent", "description": "Close an agent.", "strict": False,
         "parameters": {"type": "object", "properties": {"target": {"type": "string"}}, "required": ["target"]}}
AGENTS = {"type": "namespace", "name": "multi_agent_v1", "description": "Tools for sub-agents.",
          "tools": [CLOSE, {"type": "custom", "name": "note", "description": "Free text."}]}
EXEC = {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}}}
WIRE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def parsed(**body: Any) -> Any:
    return parse_request(json.dumps({"model": "m", "input": "hi", **body}).encode())


def no_hosted(tool: dict[str, Any]) -> bool:
    return False


def test_codex_tools_become_functions_with_valid_names() -> None:
    flat = flatten(parsed(tools=[EXEC, APPLY_PATCH, AGENTS, {"type": "web_search", "external_web_access": False}],
                          tool_choice="auto"), carries=no_hosted)
    tools = flat.request.req.tools
    assert [t["type"] for t in tools] == ["function"] * 4
    assert [t["name"] for t in tools] == ["exec_command", "apply_patch", "multi_agent_v1__close_agent",
                                          "multi_agent_v1__note"]
    assert all(WIRE.match(t["name"]) for t in tools)
    patch = tools[1]
    assert patch["parameters"] == {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"],
                                   "additionalProperties": False}
    # The grammar travels in the description, so the model still knows the input's syntax.
    assert patch["description"].startswith("Edit files.") and 'start: "*** Begin Patch" LF' in patch["description"]
    assert "lark grammar" in patch["description"]
    close = tools[2]
    assert close["parameters"] == CLOSE["parameters"] and close["strict"] is False
    assert close["description"] == "Close an agent.\n\n(Tool of the `multi_agent_v1` group: Tools for sub-agents.)"
    assert flat.dropped == ["web_search"]
    # The map gives each wire name back as the client declared it.
    assert flat.tools.lookup("exec_command") is None
    assert flat.tools.lookup("apply_patch") == ToolTarget("apply_patch", None, custom=True)
    assert flat.tools.lookup("multi_agent_v1__close_agent") == ToolTarget("close_agent", "multi_agent_v1")
    assert flat.tools.lookup("multi_agent_v1__note") == ToolTarget("note", "multi_agent_v1", custom=True)


def test_history_is_flattened_the_same_way() -> None:
    items = [
        {"role": "user", "content": "go"},
        {"type": "custom_tool_call", "id": "ctc_1", "call_id": "c1", "name": "apply_patch", "input": PATCH},
        {"type": "function_call", "call_id": "c2", "name": "close_agent", "namespace": "multi_agent_v1",
         "arguments": '{"target": "x"}'},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "patched"},
        {"type": "function_call_output", "call_id": "c2", "output": "closed"},
    ]
    flat = flatten(parsed(input=items, tools=[APPLY_PATCH, AGENTS]), carries=no_hosted)
    out = flat.request.items
    assert out[1] == {"type": "function_call", "call_id": "c1", "name": "apply_patch",
                      "arguments": json.dumps({"input": PATCH}, separators=(",", ":")), "id": "ctc_1"}
    assert out[2] == {"type": "function_call", "call_id": "c2", "name": "multi_agent_v1__close_agent",
                      "arguments": '{"target": "x"}'}
    assert out[3] == {"type": "function_call_output", "call_id": "c1", "output": "patched"}
    assert out[4] == items[4]
    # The client's request is left as it was.
    assert items[1]["type"] == "custom_tool_call" and "namespace" in items[2]


def test_long_and_colliding_names_are_shortened_deterministically() -> None:
    long_ns = {"type": "namespace", "name": "n" * 40, "description": "d",
               "tools": [{"type": "function", "name": "f" * 40}, {"type": "function", "name": "g" * 40}]}
    odd_ns = {"type": "namespace", "name": "crm.v2", "description": "d", "tools": [{"type": "function", "name": "x"}]}
    # A client function already named like a flattened one keeps its name; the namespaced one moves.
    taken = {"type": "function", "name": "ns__tool"}
    ns = {"type": "namespace", "name": "ns", "description": "d", "tools": [{"type": "function", "name": "tool"}]}
    long_fn = {"type": "function", "name": "h" * 100}
    request = parsed(tools=[long_ns, odd_ns, ns, taken, long_fn])
    first = flatten(request, carries=no_hosted)
    names = [t["name"] for t in first.request.req.tools]
    assert all(WIRE.match(name) for name in names), names
    assert len(set(names)) == len(names)
    assert names[4] == "ns__tool"  # the client's own function
    assert names[3] != "ns__tool" and names[3].startswith("ns__tool_")
    assert names[2].startswith("crm_v2__x_")
    assert len(names[0]) == len(names[1]) == 64 and names[0].startswith("n" * 40 + "__") and names[0] != names[1]
    assert first.tools.lookup(names[0]) == ToolTarget("f" * 40, "n" * 40)
    assert first.tools.lookup(names[3]) == ToolTarget("tool", "ns")
    assert first.tools.lookup(names[4]) is None
    assert first.tools.lookup(names[5]) == ToolTarget("h" * 100)
    # Same tools, same names: on every turn and every gateway worker.
    assert [t["name"] for t in flatten(request, carries=no_hosted).request.req.tools] == names


def test_tool_choice_names_the_wire_names() -> None:
    def choose(choice: dict[str, Any]) -> Any:
        return flatten(parsed(tools=[APPLY_PATCH, AGENTS, {"type": "web_search"}], tool_choice=choice),
                       carries=no_hosted).request.req.tool_choice

    assert choose({"type": "custom", "name": "apply_patch"}) == {"type": "function", "name": "apply_patch"}
    assert choose({"type": "function", "name": "close_agent", "namespace": "multi_agent_v1"}) == {
        "type": "function", "name": "multi_agent_v1__close_agent"}
    allowed = choose({"type": "allowed_tools", "mode": "auto", "tools": [
        {"type": "namespace", "name": "multi_agent_v1"}, {"type": "custom", "name": "apply_patch"},
        {"type": "web_search"}]})
    assert allowed["tools"] == [{"type": "function", "name": "multi_agent_v1__close_agent"},
                                {"type": "function", "name": "multi_agent_v1__note"},
                                {"type": "function", "name": "apply_patch"}]
    with pytest.raises(InvalidRequest) as info:
        choose({"type": "web_search"})  # forcing a tool that is left out cannot be honoured
    assert info.value.param == "tool_choice"


def test_native_custom_tools_stay_custom() -> None:
    items = [{"type": "custom_tool_call", "call_id": "c1", "name": "note", "namespace": "multi_agent_v1",
              "input": "x"}, {"type": "custom_tool_call_output", "call_id": "c1", "output": "ok"}]
    flat = flatten(parsed(input=items, tools=[APPLY_PATCH, AGENTS], tool_choice={"type": "custom", "name": "note",
                                                                                   "namespace": "multi_agent_v1"}),
                   carries=no_hosted, native_custom=True)
    tools = flat.request.req.tools
    assert [(t["type"], t["name"]) for t in tools] == [
        ("custom", "apply_patch"), ("function", "multi_agent_v1__close_agent"), ("custom", "multi_agent_v1__note")]
    assert tools[0]["format"] == APPLY_PATCH["format"]
    assert flat.request.items[0] == {"type": "custom_tool_call", "call_id": "c1", "name": "multi_agent_v1__note",
                                     "input": "x"}
    assert flat.request.items[1] == items[1]
    assert flat.request.req.tool_choice == {"type": "custom", "name": "multi_agent_v1__note"}
    # Restored as the namespaced custom tool (the builder opens a custom call for it).
    assert flat.tools.lookup("multi_agent_v1__note") == ToolTarget("note", "multi_agent_v1")


def test_hosted_tools_dropped_or_refused() -> None:
    request = parsed(tools=[EXEC, {"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["v"]},
                            {"type": "web_search_preview"}, {"type": "web_search"}])
    flat = flatten(request, carries=lambda tool: tool["type"] == "web_search_preview")
    assert [t["type"] for t in flat.request.req.tools] == ["function", "web_search_preview"]
    assert flat.dropped == ["web_search", "file_search"]
    with pytest.raises(InvalidRequest) as info:
        flatten(request, carries=lambda tool: False, refuse=True, provider="p")
    assert (info.value.param, info.value.code) == ("tools[1].type", "unsupported_parameter")
    assert "'web_search' tool is not supported by provider 'p'" in info.value.message


def test_nothing_to_flatten_is_the_same_request() -> None:
    request = parsed(tools=[EXEC], input=[{"role": "user", "content": "hi"},
                                          {"type": "function_call", "call_id": "c", "name": "exec_command",
                                           "arguments": "{}"}])
    flat = flatten(request, carries=no_hosted)
    assert flat.request is request and not flat.tools and flat.dropped == []


def test_map_assigns_names_once() -> None:
    names = ToolMap()
    assert names.wire("t", "ns") == names.wire("t", "ns") == "ns__t"
    assert names.wire("plain") == "plain" and names.lookup("plain") is None and not names.lookup("x")


@pytest.mark.parametrize(("tools", "param"), [
    ([{"type": "namespace", "name": "ns", "description": "d", "tools": []}], "tools[0].tools"),
    ([{"type": "namespace", "name": "ns", "description": "d", "tools": [{"type": "web_search"}]}],
     "tools[0].tools[0].type"),
    ([{"type": "namespace", "name": "ns", "description": "d", "tools": [{"type": "function", "name": "a b"}]}],
     "tools[0].tools[0].name"),
    ([{"type": "namespace", "description": "d", "tools": [{"type": "function", "name": "f"}]}], "tools[0].name"),
    ([{"type": "custom"}], "tools[0].name"),
])
def test_malformed_namespaces_are_400(tools: list[dict[str, Any]], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parsed(tools=tools)
    assert info.value.param == param


@pytest.mark.parametrize(("item", "param"), [
    ({"type": "custom_tool_call", "call_id": "c", "name": "n"}, "input[0].input"),
    ({"type": "custom_tool_call", "call_id": "c", "name": "n", "input": "x", "namespace": 3}, "input[0].namespace"),
    ({"type": "custom_tool_call_output", "call_id": "c", "output": 3}, "input[0].output"),
    ({"type": "function_call", "call_id": "c", "name": "n", "arguments": "{}", "namespace": []},
     "input[0].namespace"),
])
def test_malformed_tool_items_are_400(item: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parsed(input=[item])
    assert info.value.param == param


names = st.text(alphabet=st.sampled_from("ab_-.:é Z9"), min_size=1, max_size=80)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), names), names, st.booleans()), min_size=1, max_size=8))
def test_wire_names_are_valid_unique_and_reversible(declared: list[tuple[str | None, str, bool]]) -> None:
    tools = ToolMap()
    wires = {}
    for namespace, name, custom in declared:
        wire = tools.wire(name, namespace, custom=custom)
        assert WIRE.match(wire), wire
        wires.setdefault((namespace, name), (wire, custom))
    assert len({wire for wire, _ in wires.values()}) == len(wires)
    for (namespace, name), (wire, custom) in wires.items():
        target = tools.lookup(wire)
        if target is None:
            assert (namespace, name, custom) == (None, wire, False)
        else:
            assert target == ToolTarget(name, namespace, custom)
