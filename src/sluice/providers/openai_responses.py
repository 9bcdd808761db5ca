"""OpenAI Responses API upstream (`type: openai`): the canonical shape on the wire.

The request is the client's own JSON minus Sluice's extensions; answers pass through, with the
stream's item ids made stable (some Responses-compatible servers rotate them between events,
which the official SDK rejects).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from sluice.canonical.reasoning import is_sealed
from sluice.canonical.request import ParsedRequest
from sluice.config import ProviderConfig
from sluice.providers.base import Adapter, Event
from sluice.providers.transport import UpstreamClient

# Sluice's own request fields, and those the endpoint reference says are accepted but ignored.
_NOT_FORWARDED = frozenset({
    "routing", "cache_control", "background", "context_management", "conversation", "prompt",
    "safety_identifier", "service_tier", "truncation", "previous_response_id",
})
# Keys Sluice accepts on items and tools that OpenAI itself would reject.
_ITEM_EXTENSIONS = ("cache_control", "is_error")

_encode = msgspec.json.encode
_decode = msgspec.json.decode

# The statuses a final Response may have; anything else is a non-conforming upstream.
_FINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled"})


class OpenAIResponsesAdapter(Adapter):
    def __init__(self, name: str, config: ProviderConfig, client: UpstreamClient | None = None) -> None:
        super().__init__(name, config, client)
        self._url = f"{(config.base_url or 'https://api.openai.com/v1').rstrip('/')}/responses"
        self._headers = {"content-type": "application/json", **config.headers}
        if config.api_key:
            self._headers["authorization"] = f"Bearer {config.api_key}"

    def body(self, parsed: ParsedRequest, model: str, stream: bool) -> bytes:
        body = {k: v for k, v in parsed.raw.items() if k not in _NOT_FORWARDED}
        body["model"] = model
        body["stream"] = stream
        if body.get("prompt_cache_retention") == "in-memory":
            body["prompt_cache_retention"] = "in_memory"
        if isinstance(body.get("input"), list):
            # Reasoning sealed for another provider would be rejected by OpenAI: leave it out.
            body["input"] = [_strip(item) for item in body["input"]
                             if not (item.get("type") == "reasoning" and is_sealed(item.get("encrypted_content")))]
        if body.get("tools"):
            body["tools"] = [_strip(tool) for tool in body["tools"]]
        return _encode(body)

    async def create(self, parsed: ParsedRequest, model: str) -> dict[str, Any]:
        result = await self.post_json(self._url, self.body(parsed, model, False), self._headers)
        if result.get("status") == "failed" and result.get("error"):
            err = result["error"]
            raise self.error_from_body(502, _encode({"error": err}))
        if result.get("status") not in _FINAL_STATUSES:
            # Some compatible servers answer e.g. "complete"; clients validate against the enum.
            result["status"] = "incomplete" if result.get("incomplete_details") else "completed"
        return result

    async def stream(self, parsed: ParsedRequest, model: str) -> AsyncIterator[list[Event]]:
        resp = await self.post_stream(self._url, self.body(parsed, model, True), self._headers)
        ids = _StableIds()

        def translate(blocks: list[tuple[str | None, bytes]]) -> list[Event]:
            # Some Responses-compatible servers end like chat streams, with [DONE].
            return [_event(name, data, ids) for name, data in blocks if data != b"[DONE]"]

        try:
            async for batch in self.sse_batches(resp, translate):
                yield batch
        finally:
            await resp.aclose()


_LIFECYCLE = frozenset({"response.created", "response.in_progress", "response.queued"})


def _event(name: str | None, data: bytes, ids: _StableIds) -> Event:
    # Some Responses-compatible servers end like chat streams, with [DONE] (filtered by the caller).
    if name in _LIFECYCLE:
        # The gateway replaces a lifecycle event's Response with its own: no need to decode it.
        return {"type": name, "response": {}}
    return ids.apply(_decode(data))


def _strip(obj: Any) -> Any:
    """Remove Sluice's extension keys from an item or tool, and `cache_control` from its parts."""
    if not isinstance(obj, dict):
        return obj
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
