"""OpenAI Responses API upstream (`type: openai`): the canonical shape on the wire.

The request is the canonical one on the wire: its typed fields and items, plus the top-level
fields Sluice does not model (`CanonicalRequest.extra`, OpenAI-native fields passed through
untouched), minus Sluice's extensions. Answers pass through, with the stream's item ids made
stable (some Responses-compatible servers rotate them between events, which the official SDK
rejects) and the lifecycle events left to the pipeline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from sluice.canonical.reasoning import is_sealed
from sluice.canonical.request import CanonicalRequest
from sluice.config import ProviderConfig
from sluice.providers.base import Adapter, Event, failed_tool_output
from sluice.providers.transport import UpstreamClient

# Sluice's own request fields, those the endpoint reference says are accepted but ignored, and
# Chat Completions fields the Responses API does not take (its spec has no penalties).
_NOT_FORWARDED = frozenset({
    "routing", "cache_control", "background", "context_management", "conversation", "prompt",
    "safety_identifier", "service_tier", "truncation", "previous_response_id",
    "frequency_penalty", "presence_penalty",
})
_CLEARED = dict.fromkeys(_NOT_FORWARDED)
# Keys Sluice accepts on items and tools that OpenAI itself would reject.
_ITEM_EXTENSIONS = ("cache_control", "is_error")
# The Responses API's smallest `max_output_tokens`; a smaller limit is raised to it (see `_over_limit`).
MIN_OUTPUT_TOKENS = 16

_encode = msgspec.json.encode
_decode = msgspec.json.decode

# The statuses a final Response may have; anything else is a non-conforming upstream.
_FINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled"})


class OpenAIResponsesAdapter(Adapter):
    flattens_tools = False  # the canonical protocol: namespaces, custom and hosted tools go as they are

    def __init__(self, name: str, config: ProviderConfig, client: UpstreamClient | None = None) -> None:
        super().__init__(name, config, client)
        self._url = f"{(config.base_url or 'https://api.openai.com/v1').rstrip('/')}/responses"
        self._headers = {"content-type": "application/json", **config.headers}
        if config.api_key:
            self._headers["authorization"] = f"Bearer {config.api_key}"

    def body(self, parsed: CanonicalRequest, model: str, stream: bool) -> bytes:
        req = parsed.req
        # The typed request itself is encoded (fields left at their default are omitted), with
        # Sluice's own fields cleared and the upstream's values set.
        changes: dict[str, Any] = {
            **_CLEARED, "model": model, "stream": stream,
            # Reasoning sealed for another provider would be rejected by OpenAI: leave it out.
            "input": [_strip(item) for item in parsed.items
                      if not (item.get("type") == "reasoning" and is_sealed(item.get("encrypted_content")))],
        }
        if req.prompt_cache_retention == "in-memory":
            changes["prompt_cache_retention"] = "in_memory"
        if not stream:
            changes["stream_options"] = None  # "only set this when you set stream: true"
        if req.max_output_tokens is not None and req.max_output_tokens < MIN_OUTPUT_TOKENS:
            changes["max_output_tokens"] = MIN_OUTPUT_TOKENS  # OpenAI rejects less
        if req.tools:
            changes["tools"] = [_strip(tool) for tool in req.tools]
        body = _encode(msgspec.structs.replace(req, **changes))
        if parsed.extra:  # the fields Sluice does not model, untouched: spliced into the same object
            body = body[:-1] + b"," + _encode(parsed.extra)[1:]
        return body

    async def create(self, parsed: CanonicalRequest, model: str) -> dict[str, Any]:
        result = await self.post_json(self._url, self.body(parsed, model, False), self._headers)
        if result.get("status") == "failed" and result.get("error"):
            err = result["error"]
            raise self.error_from_body(502, _encode({"error": err}))
        if result.get("status") not in _FINAL_STATUSES:
            # Some compatible servers answer e.g. "complete"; clients validate against the enum.
            result["status"] = "incomplete" if result.get("incomplete_details") else "completed"
        _over_limit(result, parsed.req.max_output_tokens)
        return result

    async def stream(self, parsed: CanonicalRequest, model: str) -> AsyncIterator[list[Event]]:
        resp = await self.post_stream(self._url, self.body(parsed, model, True), self._headers)
        ids = _StableIds()
        limit = parsed.req.max_output_tokens

        def translate(blocks: list[tuple[str | None, bytes]], batch: list[Event]) -> None:
            for name, data in blocks:
                # Some Responses-compatible servers end like chat streams, with [DONE].
                if name in _LIFECYCLE or data == b"[DONE]":
                    continue  # the pipeline sends its own, once the stream has content
                event = ids.apply(_decode(data))
                kind = event.get("type")
                if kind in _LIFECYCLE:
                    continue
                if kind == "error":
                    event = _flat_error(event)
                elif kind == "response.completed" and _over_limit(event.get("response"), limit):
                    event["type"] = "response.incomplete"
                batch.append(event)
            return

        try:
            async for batch in self.sse_batches(resp, translate):
                yield batch
        finally:
            await resp.aclose()


_LIFECYCLE = frozenset({"response.created", "response.in_progress", "response.queued"})


def _flat_error(event: Event) -> Event:
    """The canonical `error` event: code, message and param at the top level.

    OpenAI's API nests them (`{"error": {code, message, param}}`) while its SDK types read them at
    the top level.
    """
    nested = event.get("error")
    source = nested if isinstance(nested, dict) else event
    return {"type": "error", "code": source.get("code"), "message": source.get("message") or
            "The upstream reported an error.", "param": source.get("param")}


def _over_limit(response: Any, limit: int | None) -> bool:
    """Report a completed answer longer than the client's `max_output_tokens` as incomplete.

    A limit under the API's minimum of 16 was sent as 16, so the model may write up to 16 tokens.
    When the usage shows more output tokens (reasoning included, as the limit counts them) than the
    client asked for, the Response says `incomplete` / `max_output_tokens`, as OpenAI would have
    for that limit; the text is kept whole (Sluice cannot cut tokens). True when it changed.
    """
    if limit is None or limit >= MIN_OUTPUT_TOKENS or not isinstance(response, dict):
        return False
    usage = response.get("usage")
    used = usage.get("output_tokens") if isinstance(usage, dict) else None
    if response.get("status") in ("incomplete", "failed", "cancelled") or not isinstance(used, int) or used <= limit:
        return False
    response["status"] = "incomplete"
    response["incomplete_details"] = {"reason": "max_output_tokens"}
    return True


def _strip(obj: Any) -> Any:
    """Remove Sluice's extension keys from an item or tool, and `cache_control` from its parts.

    A failed tool's output (`is_error: true`, which OpenAI has no field for) says so in its text.
    """
    if not isinstance(obj, dict):
        return obj
    if obj.get("is_error") is True and obj.get("type") == "function_call_output":
        obj = {**obj, "output": failed_tool_output(obj.get("output") or "")}
    if any(key in obj for key in _ITEM_EXTENSIONS):
        obj = {k: v for k, v in obj.items() if k not in _ITEM_EXTENSIONS}
    for field in ("content", "output"):
        parts = obj.get(field)
        if isinstance(parts, list) and any(isinstance(p, dict) and "cache_control" in p for p in parts):
            obj = {**obj, field: [_strip(p) for p in parts]}
    return obj


class _StableIds:
    """Keeps each output item's first id for the rest of the stream."""

    __slots__ = ("_by_index",)

    def __init__(self) -> None:
        self._by_index: dict[int, str] = {}

    def apply(self, event: Event) -> Event:
        event.pop("sequence_number", None)
        index = event.get("output_index")
        if index is None:
            response = event.get("response")
            if isinstance(response, dict) and response.get("output"):
                for position, item in enumerate(response["output"]):
                    known = self._by_index.get(position)
                    if known and isinstance(item, dict) and item.get("id") not in (None, known):
                        item["id"] = known
            return event
        item = event.get("item")
        if isinstance(item, dict) and item.get("id"):
            known = self._by_index.setdefault(index, item["id"])
            if item["id"] != known:
                item["id"] = known
        if "item_id" in event:
            known = self._by_index.setdefault(index, event["item_id"])
            if event["item_id"] != known:
                event["item_id"] = known
        return event
