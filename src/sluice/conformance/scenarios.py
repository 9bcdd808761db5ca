"""The conformance scenarios: what a client of the Responses API relies on, checked through the official SDK.

Every scenario talks to the deployment only through `openai.OpenAI`, the way an application would,
so it checks the SDK's side too: its typed objects, `responses.stream`'s typed events,
`responses.parse` with a pydantic model, and every answer validated against the SDK's own pydantic
types (the SDK itself builds its objects leniently and would hide a wrong shape).

A scenario returns a one-line detail when it passes. It raises `Failed` when the deployment got
something wrong, and `Unsupported` when the model cannot do it by capability: the deployment
refuses the scenario's first request with 400 `unsupported_parameter` / `unsupported_value`, or the
upstream has nothing to show for it (reasoning it keeps hidden). Any other error is a failure.
"""

from __future__ import annotations

import contextlib
import json
import re
import typing
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pydantic
from openai.types.responses import Response, ResponseStreamEvent

# Each scenario's prompt is its own (plain ASCII), so a scripted upstream can tell them apart.
INSTRUCTIONS = "You are being tested by a conformance check. Answer briefly."
CREATE_PROMPT = "Reply with a short friendly greeting."
STREAM_PROMPT = "Count from one to five in words, separated by commas."
TOOL_LOOP_PROMPT = "What is the weather in Paris right now? Use the get_weather tool."
PARSE_PROMPT = "What is the largest city in Mexico? Give the city and its country."
REASONING_PROMPT = "Should I take an umbrella in Paris today? Check the weather with get_weather first."
FOLLOW_UP_PROMPT = "Thanks. Now say that again in five words or fewer."
LOGPROBS_PROMPT = "Name one primary color, in one word."
USAGE_PROMPT = "In one sentence: what is a token, for a language model?"
ERROR_PROMPT = "This request is invalid on purpose."
# What the tool answers; a request that carries it is the second turn of a loop.
WEATHER_RESULT = '{"city": "Paris", "temperature_c": 18, "conditions": "sunny"}'

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}

# 400 codes that say "this model (or its provider) cannot do that", not "the request is malformed".
UNSUPPORTED_CODES = frozenset({"unsupported_parameter", "unsupported_value"})
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})



def _event_classes() -> dict[str, Any]:
    """The SDK's event class for each event `type` (the union's members, by their `type` literal)."""
    union = ResponseStreamEvent
    if typing.get_origin(union) is typing.Annotated:
        union = typing.get_args(union)[0]
    classes: dict[str, Any] = {}
    for cls in typing.get_args(union):
        field = getattr(cls, "model_fields", {}).get("type")
        for kind in typing.get_args(field.annotation) if field is not None else ():
            classes[kind] = cls
    return classes


_EVENTS = _event_classes()


class CityLocation(pydantic.BaseModel):
    """The structured output `parse` asks for."""

    city: str
    country: str


class Failed(Exception):
    """The deployment did something a client of the Responses API does not expect."""


class Unsupported(Exception):
    """The model cannot do what the scenario checks, by capability."""


@dataclass
class Context:
    client: openai.OpenAI
    model: str
    step: str = ""  # what the scenario is doing, to name it when something fails


def make_client(base_url: str, api_key: str | None, timeout: float) -> openai.OpenAI:
    # The key is always given: left out, the SDK would read OPENAI_API_KEY and send the user's
    # OpenAI key to whatever deployment is being checked. No retries: every answer counts.
    return openai.OpenAI(base_url=base_url, api_key=api_key or "sluice-conformance-no-key", max_retries=0,
                         timeout=timeout)


def run_scenario(ctx: Context, name: str) -> tuple[str, str]:
    """(`ok` | `failed` | `unsupported`, detail) of one scenario."""
    ctx.step = ""
    try:
        return "ok", SCENARIOS[name](ctx)
    except Unsupported as exc:
        return "unsupported", str(exc)
    except Failed as exc:
        return "failed", _in_step(ctx, str(exc))
    except openai.APIStatusError as exc:
        return "failed", _in_step(ctx, describe_error(exc))
    except openai.APIConnectionError as exc:  # timeouts included
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        return "failed", _in_step(ctx, f"{exc}{cause}")
    except pydantic.ValidationError as exc:  # responses.parse could not read the answer into the model
        return "failed", _in_step(ctx, f"the SDK could not validate the answer: {_first_error(exc)}")
    except Exception as exc:  # the SDK choking on what it received is a finding too
        return "failed", _in_step(ctx, f"{type(exc).__name__}: {exc}")


# --- the scenarios -------------------------------------------------------------------------------


def create(ctx: Context) -> str:
    """`responses.create`: a completed Response with text, in the SDK's shape."""
    ctx.step = "responses.create"
    response = ctx.client.responses.create(model=ctx.model, input=CREATE_PROMPT, instructions=INSTRUCTIONS)
    _check_response(response)
    check(response.object == "response", f"object is {response.object!r}, not 'response'")
    check(bool(response.id), "the response has no id")
    check(any(item.type == "message" for item in response.output), f"no message in the output ({_kinds(response)})")
    check(bool(response.output_text.strip()), "the message has no text")
    return f"{_snippet(response.output_text)} (served by {response.model})"


def stream(ctx: Context) -> str:
    """`responses.stream`: typed events in order, text deltas adding up to the final text."""
    ctx.step = "responses.stream"
    events, final = _stream(ctx, input=STREAM_PROMPT, instructions=INSTRUCTIONS)
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    check(bool(deltas), "the stream carried no response.output_text.delta")
    check(bool(final.output_text.strip()), "the final response has no text")
    check(final.usage is not None, "the final response has no usage")
    check(isinstance(_cost(final), int | float), "the final response has no cost.total")
    return f"{len(events)} events, {len(deltas)} text deltas: {_snippet(final.output_text)}"


def tool_loop(ctx: Context) -> str:
    """Two turns: a function_call, then its function_call_output fed back for the answer."""
    question = {"role": "user", "content": TOOL_LOOP_PROMPT}
    ctx.step = "turn 1"
    with _capability():
        turn1 = ctx.client.responses.create(model=ctx.model, input=[question], tools=[WEATHER_TOOL],
                                            tool_choice="required")
    _check_response(turn1)
    calls = _calls(turn1)
    check(bool(calls), f"tool_choice 'required' but no function_call in the output ({_kinds(turn1)})")
    ctx.step = "turn 2"
    turn2 = ctx.client.responses.create(model=ctx.model, input=[question, *turn1.output, *_results(calls)],
                                        tools=[WEATHER_TOOL])
    _check_response(turn2)
    check(bool(turn2.output_text.strip()), f"no answer after the function_call_output ({_kinds(turn2)})")
    return f"{_describe_calls(calls)} -> {_snippet(turn2.output_text)}"


def parse(ctx: Context) -> str:
    """`responses.parse` with a pydantic model: json_schema output the SDK reads into the model."""
    ctx.step = "responses.parse"
    with _capability():
        response = ctx.client.responses.parse(model=ctx.model, input=PARSE_PROMPT, text_format=CityLocation)
    _check_response(response)
    parsed = response.output_parsed
    check(isinstance(parsed, CityLocation), f"no parsed output (text: {_snippet(response.output_text)})")
    assert isinstance(parsed, CityLocation)
    return f"CityLocation(city={parsed.city!r}, country={parsed.country!r})"


def reasoning(ctx: Context) -> str:
    """Reasoning with `include=["reasoning.encrypted_content"]`, its items sent back in turn 2 (streamed)."""
    common: dict[str, Any] = {"tools": [WEATHER_TOOL], "reasoning": {"effort": "low", "summary": "auto"},
                              "include": ["reasoning.encrypted_content"]}
    question = {"role": "user", "content": REASONING_PROMPT}
    ctx.step = "turn 1 (streamed)"
    with _capability():
        _, turn1 = _stream(ctx, input=[question], **common)
    items = [item for item in turn1.output if item.type == "reasoning"]
    tokens = _reasoning_tokens(turn1)
    check(bool(items) or tokens > 0, "no reasoning: no reasoning item and 0 reasoning tokens")
    sealed = [item for item in items if item.encrypted_content]
    check(not sealed or len(sealed) == len(items),
          f"only {len(sealed)} of {len(items)} reasoning items carry encrypted_content")
    calls = _calls(turn1)
    follow_up = _results(calls) if calls else [{"role": "user", "content": FOLLOW_UP_PROMPT}]
    ctx.step = "turn 2 (streamed, turn 1's items sent back)"
    _, turn2 = _stream(ctx, input=[question, *turn1.output, *follow_up], **common)
    check(bool(turn2.output), "turn 2 has no output")
    after = "function_call_output" if calls else "a follow-up question"
    if not items:
        raise Unsupported(f"the upstream keeps its reasoning hidden ({tokens} reasoning tokens, no reasoning item "
                          f"to send back); turn 2 after {after} completed")
    if not sealed:
        raise Unsupported(f"{len(items)} reasoning item(s) without encrypted_content: the upstream gives no "
                          f"reasoning state to round-trip; turn 2 with them completed")
    return (f"{len(items)} reasoning item(s) with encrypted_content, {tokens} reasoning tokens; sent back "
            f"with {after}: {_snippet(turn2.output_text or _kinds(turn2))}")


def logprobs(ctx: Context) -> str:
    """`include=["message.output_text.logprobs"]` and `top_logprobs` (streamed): token logprobs on the text."""
    ctx.step = "responses.stream"
    with _capability():
        events, final = _stream(ctx, input=LOGPROBS_PROMPT, include=["message.output_text.logprobs"], top_logprobs=2)
    parts = [part for item in final.output if item.type == "message"
             for part in item.content if part.type == "output_text"]
    check(bool(parts), f"no output_text in the output ({_kinds(final)})")
    found = [lp for part in parts for lp in part.logprobs or ()]
    check(bool(found), "the output_text carries no logprobs")
    for lp in found:
        check(isinstance(lp.token, str) and isinstance(lp.logprob, int | float) and lp.logprob <= 0,
              f"not a token logprob: {lp.to_dict()}")
    on_deltas = sum(len(getattr(event, "logprobs", None) or ()) for event in events
                    if event.type == "response.output_text.delta")
    alternatives = max(len(lp.top_logprobs or ()) for lp in found)
    return (f"{len(found)} tokens with logprobs ({on_deltas} on the text deltas), "
            f"{alternatives or 'no'} top_logprobs alternatives per token")


def usage(ctx: Context) -> str:
    """Normalized `usage` (cached and reasoning token details) and the gateway's `cost.total`."""
    ctx.step = "responses.create"
    response = ctx.client.responses.create(model=ctx.model, input=USAGE_PROMPT)
    _check_response(response)
    data = response.to_dict(warnings=False)
    used = data.get("usage")
    check(isinstance(used, dict), "the response has no usage")
    assert isinstance(used, dict)
    counts = {key: used.get(key) for key in ("input_tokens", "output_tokens", "total_tokens")}
    for key, value in counts.items():
        check(_is_count(value), f"usage.{key} is {value!r}, not a token count")
    check(counts["input_tokens"] > 0 and counts["output_tokens"] > 0,  # type: ignore[operator]
          f"usage counts no tokens: {counts}")
    check(counts["total_tokens"] == counts["input_tokens"] + counts["output_tokens"],  # type: ignore[operator]
          f"usage.total_tokens {counts['total_tokens']} != input_tokens + output_tokens")
    cached = (used.get("input_tokens_details") or {}).get("cached_tokens")
    reasoning_tokens = (used.get("output_tokens_details") or {}).get("reasoning_tokens")
    check(_is_count(cached), f"usage.input_tokens_details.cached_tokens is {cached!r}")
    check(_is_count(reasoning_tokens), f"usage.output_tokens_details.reasoning_tokens is {reasoning_tokens!r}")
    check(cached <= counts["input_tokens"], "more cached tokens than input tokens")  # type: ignore[operator]
    check(reasoning_tokens <= counts["output_tokens"], "more reasoning tokens than output tokens")  # type: ignore[operator]
    total = _cost(response)
    check(isinstance(total, int | float) and not isinstance(total, bool) and total >= 0,
          f"cost.total is {total!r}, not an amount in USD (cost: {data.get('cost')!r})")
    priced = "" if total else " (0: no price configured for this route?)"
    return (f"input {counts['input_tokens']} (cached {cached}), output {counts['output_tokens']} "
            f"(reasoning {reasoning_tokens}), cost.total ${total:.6f}{priced}")


def errors(ctx: Context) -> str:
    """Errors in OpenAI's shape: an invalid parameter is a 400 naming it, an unknown model a 404."""
    ctx.step = "temperature=5"
    bad = _expect_error(lambda: ctx.client.responses.create(model=ctx.model, input=ERROR_PROMPT, temperature=5),
                        openai.BadRequestError)
    check(bad.param == "temperature", f"param is {bad.param!r}, not 'temperature'")
    check(bad.type == "invalid_request_error", f"type is {bad.type!r}, not 'invalid_request_error'")
    ctx.step = "temperature=5, streamed"
    streamed = _expect_error(lambda: ctx.client.responses.create(model=ctx.model, input=ERROR_PROMPT, temperature=5,
                                                                 stream=True), openai.BadRequestError)
    check(streamed.param == "temperature", f"param is {streamed.param!r}, not 'temperature'")
    ctx.step = "unknown model"
    unknown = f"sluice-conformance-no-such-model-{uuid.uuid4().hex[:8]}"
    missing = _expect_error(lambda: ctx.client.responses.create(model=unknown, input=ERROR_PROMPT),
                            openai.NotFoundError)
    check(missing.code == "model_not_found", f"code is {missing.code!r}, not 'model_not_found'")
    return (f"400 {bad.type} (param temperature, code {bad.code}), the same before a stream; "
            f"404 {missing.code}")


SCENARIOS: dict[str, Callable[[Context], str]] = {
    "create": create,
    "stream": stream,
    "tool_loop": tool_loop,
    "parse": parse,
    "reasoning": reasoning,
    "logprobs": logprobs,
    "usage": usage,
    "errors": errors,
}


# --- helpers ------------------------------------------------------------------------------------


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


@contextlib.contextmanager
def _capability() -> Iterator[None]:
    """A 400 `unsupported_parameter` for this block's request: the model can't, the scenario is unsupported."""
    try:
        yield
    except openai.BadRequestError as exc:
        if exc.code in UNSUPPORTED_CODES:
            raise Unsupported(f"400 {exc.code} ({exc.param}): {_message(exc)}") from None
        raise


def _expect_error(call: Callable[[], Any], expected: type[openai.APIStatusError]) -> openai.APIStatusError:
    """The error `call` must raise, its body checked to be OpenAI's `{"error": {...}}`."""
    status = {openai.BadRequestError: 400, openai.NotFoundError: 404}[expected]
    try:
        answer = call()
    except expected as exc:
        _check_error_body(exc)
        return exc
    except openai.APIStatusError as exc:
        raise Failed(f"expected {status}, got {describe_error(exc)}") from None
    with contextlib.suppress(Exception):
        answer.close()  # a stream
    raise Failed(f"expected {status}, got a {type(answer).__name__}")


def _check_error_body(exc: openai.APIStatusError) -> None:
    try:
        body = exc.response.json()
    except ValueError:
        raise Failed(f"the {exc.status_code} body is not JSON: {_snippet(exc.response.text)}") from None
    error = body.get("error") if isinstance(body, dict) else None
    check(isinstance(error, dict), f"the {exc.status_code} body is not {{'error': {{...}}}}: {_snippet(str(body))}")
    assert isinstance(error, dict)
    missing = [key for key in ("message", "type", "param", "code") if key not in error]
    check(not missing, f"the {exc.status_code} error lacks {', '.join(missing)}")
    check(isinstance(error["message"], str) and bool(error["message"]), "the error has no message")


def _stream(ctx: Context, **kwargs: Any) -> tuple[list[Any], Any]:
    """`responses.stream`: (typed events, final response), the events checked in order."""
    with ctx.client.responses.stream(model=ctx.model, **kwargs) as stream:
        events = list(stream)
        _check_events(events)
        last = events[-1]
        if last.type != "response.completed":
            raise Failed(f"the stream ended with {last.type}: {_why_not_completed(last.response)}")
        final = stream.get_final_response()
    _check_response(final)
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    check(text == final.output_text, f"the text deltas ({_snippet(text)}) differ from the final text "
                                     f"({_snippet(final.output_text)})")
    return events, final


def _check_events(events: list[Any]) -> None:
    """What every Responses stream guarantees: numbering, one terminal event, items opened before use."""
    check(bool(events), "the stream carried no events")
    for event in events:
        kind = getattr(event, "type", None)
        if not _EVENTS:  # an SDK whose union could not be taken apart: validate against the union
            _validate(f"a {kind} event", pydantic.TypeAdapter(ResponseStreamEvent), event.to_dict(warnings=False))
            continue
        check(kind in _EVENTS, f"an event of type {kind!r}, which the SDK does not know")
        _validate(f"a {kind} event", _EVENTS[kind], event.to_dict(warnings=False))
    kinds = [event.type for event in events]
    check(kinds[0] == "response.created", f"the first event is {kinds[0]}, not response.created")
    numbers = [event.sequence_number for event in events]
    check(numbers == list(range(len(events))), f"sequence_number does not count 0, 1, 2, ...: {numbers[:8]}...")
    terminals = [i for i, kind in enumerate(kinds) if kind in TERMINAL]
    check(terminals == [len(events) - 1], f"not exactly one terminal event, last: {[kinds[i] for i in terminals]}")
    response_id = events[0].response.id
    opened: dict[int, str | None] = {}
    closed: set[int] = set()
    for event in events:
        if hasattr(event, "response"):
            check(event.response.id == response_id, f"{event.type} names another response")
        index = getattr(event, "output_index", None)
        if index is None:
            continue
        if event.type == "response.output_item.added":
            check(index not in opened, f"output_index {index} added twice")
            opened[index] = event.item.id
            continue
        check(index in opened, f"{event.type} before response.output_item.added at output_index {index}")
        check(index not in closed, f"{event.type} after response.output_item.done at output_index {index}")
        item_id = getattr(event, "item_id", None)
        check(item_id is None or item_id == opened[index], f"{event.type}: item_id differs from the added item's")
        if event.type == "response.output_item.done":
            closed.add(index)
    if kinds[-1] == "response.completed":
        check(closed == set(opened), f"items never done: {sorted(set(opened) - closed)}")
        final_ids = [item.id for item in events[-1].response.output]
        check(final_ids == [opened[i] for i in sorted(opened)], "the final output is not the streamed items")


def _check_response(response: Any) -> None:
    """Valid against the SDK's `Response` type, and completed."""
    _validate("the response", Response, response.to_dict(warnings=False))
    if response.status != "completed":
        raise Failed(f"status {response.status}: {_why_not_completed(response)}")


def _validate(what: str, model: Any, data: Any) -> None:
    try:
        if isinstance(model, pydantic.TypeAdapter):
            model.validate_python(data)
        else:
            model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise Failed(f"{what} does not validate against the SDK's types: {_first_error(exc)}") from None


def _why_not_completed(response: Any) -> str:
    if response.error is not None:
        return f"{response.error.code}: {response.error.message}"
    if response.incomplete_details is not None:
        return f"incomplete ({response.incomplete_details.reason})"
    return "no reason given"


def _calls(response: Any) -> list[Any]:
    """The function calls of a response, each checked: a declared tool, JSON object arguments."""
    calls = [item for item in response.output if item.type == "function_call"]
    for call in calls:
        check(call.name == WEATHER_TOOL["name"], f"a call to {call.name!r}, which is not a declared tool")
        check(bool(call.call_id), "a function_call without call_id")
        try:
            arguments = json.loads(call.arguments)
        except ValueError:
            raise Failed(f"function_call arguments are not JSON: {_snippet(call.arguments)}") from None
        check(isinstance(arguments, dict), f"function_call arguments are not an object: {_snippet(call.arguments)}")
    return calls


def _results(calls: list[Any]) -> list[dict[str, Any]]:
    return [{"type": "function_call_output", "call_id": call.call_id, "output": WEATHER_RESULT} for call in calls]


def _describe_calls(calls: list[Any]) -> str:
    return ", ".join(f"{call.name}({_snippet(call.arguments, quote=False)})" for call in calls)


def _reasoning_tokens(response: Any) -> int:
    details = response.usage.output_tokens_details if response.usage is not None else None
    return int(getattr(details, "reasoning_tokens", 0) or 0)


def _cost(response: Any) -> Any:
    cost = response.to_dict(warnings=False).get("cost")
    return cost.get("total") if isinstance(cost, dict) else None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _kinds(response: Any) -> str:
    return ", ".join(item.type for item in response.output) or "empty"


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return _snippet(exc.response.text, limit=200, quote=False)


def describe_error(exc: openai.APIStatusError) -> str:
    label = exc.code or (exc.body.get("type") if isinstance(exc.body, dict) else None)
    return f"HTTP {exc.status_code}{f' {label}' if label else ''}: {_message(exc)}"


def _first_error(exc: pydantic.ValidationError) -> str:
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "top level"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{location}: {first['msg']}{more}"


def _in_step(ctx: Context, detail: str) -> str:
    return f"{ctx.step}: {detail}" if ctx.step else detail


def _snippet(text: str, limit: int = 48, quote: bool = True) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return repr(flat) if quote else flat
