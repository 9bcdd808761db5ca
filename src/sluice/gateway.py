"""The request pipeline, independent of HTTP.

request -> validate -> (guardrails) -> route -> provider adapter -> canonical events
        -> (guardrails restore) -> accounting -> client

The HTTP layer hands a validated request in and gets back either a finished Response or an
`OpenStream` that yields SSE bytes. Guardrails and storage attach at the marked points.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from sluice.accounting.cost import response_cost
from sluice.canonical.ids import new_id
from sluice.canonical.request import ParsedRequest
from sluice.canonical.response import finalize, skeleton
from sluice.config import Config
from sluice.errors import GatewayError, InvalidRequest, NoRouteSucceeded, NotFound, UpstreamError
from sluice.providers import create_adapter
from sluice.providers.base import CLIENT_FAULT, Adapter, Event, stream_failure
from sluice.routing.catalog import Catalog, Route
from sluice.routing.router import plan

log = logging.getLogger("sluice")

_encode = msgspec.json.encode
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_LIFECYCLE = frozenset({"response.created", "response.in_progress", "response.queued"})
# Upstream statuses passed on to the client as they are when the last route fails with them.
_PASSED_ON = frozenset({400, 401, 403, 404, 413, 422, 429})


class Gateway:
    def __init__(self, config: Config, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        self.adapters: dict[str, Adapter] = {
            name: create_adapter(name, provider) for name, provider in catalog.providers.items()
        }

    async def close(self) -> None:
        for adapter in self.adapters.values():
            await adapter.close()

    def _routes(self, parsed: ParsedRequest) -> Sequence[Route]:
        if parsed.req.previous_response_id is not None:
            # Stored conversations are not kept yet, so no id can be found.
            raise NotFound(f"Previous response with id '{parsed.req.previous_response_id}' not found.",
                           param="previous_response_id", code="previous_response_not_found")
        routes = plan(parsed, self.catalog)
        # A route whose wire protocol cannot carry the request is skipped; if none can, the
        # first route's reason is the answer.
        able: list[Route] = []
        refusal: InvalidRequest | None = None
        for route in routes:
            try:
                self.adapters[route.provider].check(parsed, route.model)
            except InvalidRequest as exc:
                refusal = refusal or exc
                continue
            able.append(route)
        if not able and refusal is not None:
            raise refusal
        return able

    async def create(self, parsed: ParsedRequest) -> dict[str, Any]:
        """Serve a non-streaming request: the first route that succeeds answers."""
        created_at = int(time.time())
        last: UpstreamError | None = None
        for route in self._routes(parsed):
            try:
                result = await self.adapters[route.provider].create(parsed, route.model)
            except Exception as exc:  # any adapter failure is this route's failure
                exc = _as_upstream_error(exc, route)
                last = exc
                log.warning("route %s failed: %s %s", route.label, exc.status, exc.message)
                if exc.status in CLIENT_FAULT:
                    break
                continue
            return self._finish(parsed, route, result, new_id("resp"), created_at)
        raise _final_error(last)

    async def open_stream(self, parsed: ParsedRequest) -> OpenStream:
        """Start a streaming request; raises before anything is sent if no route starts."""
        last: UpstreamError | None = None
        for route in self._routes(parsed):
            batches = self.adapters[route.provider].stream(parsed, route.model)
            try:
                first = await anext(batches)
            except StopAsyncIteration:
                last = UpstreamError("The upstream closed the stream without sending anything.",
                                     provider=route.provider, retryable=True, status=502)
                continue
            except Exception as exc:  # any adapter failure is this route's failure
                exc = _as_upstream_error(exc, route)
                last = exc
                log.warning("route %s failed: %s %s", route.label, exc.status, exc.message)
                if exc.status in CLIENT_FAULT:
                    break
                continue
            return OpenStream(self, parsed, route, first, batches)
        raise _final_error(last)

    def _finish(self, parsed: ParsedRequest, route: Route, result: dict[str, Any], response_id: str,
                created_at: int) -> dict[str, Any]:
        response = finalize(parsed, result, response_id=response_id, model=route.label, created_at=created_at)
        # Accounting: priced from the normalized usage. Storage of the response attaches here.
        response["cost"] = {"total": response_cost(response["usage"], route.price) or 0.0}
        return response


def _as_upstream_error(exc: Exception, route: Route) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, GatewayError):
        raise exc  # the request itself was refused (e.g. a field the protocol cannot carry)
    # An answer the adapter could not read (malformed JSON, unexpected shape): the route failed,
    # another may not. Never a 500 for the client.
    log.warning("route %s sent an unreadable answer: %s", route.label, type(exc).__name__)
    return UpstreamError(f"{route.provider}: the upstream sent an answer Sluice could not read "
                         f"({type(exc).__name__}).", provider=route.provider, retryable=True, status=502,
                         code="upstream_invalid_response")


def _final_error(last: UpstreamError | None) -> GatewayError:
    if last is None:
        return NoRouteSucceeded("No route could serve the request.", code="no_route")
    if last.status in _PASSED_ON:
        return last
    return NoRouteSucceeded(last.message, code=last.code or "upstream_error")


class OpenStream:
    """A started stream: numbers events, fills in the Response envelope, ends exactly once.

    Adapters yield events in batches (what one upstream read produced); each batch leaves as one
    write, so a burst of small deltas costs one send, not one per event.
    """

    def __init__(self, gateway: Gateway, parsed: ParsedRequest, route: Route, first: list[Event],
                 batches: AsyncIterator[list[Event]]) -> None:
        self.gateway = gateway
        self.parsed = parsed
        self.route = route
        self.response_id = new_id("resp")
        self.created_at = int(time.time())
        self._first = first
        self._batches = batches
        self._sequence = 0
        self._done_items: dict[int, dict[str, Any]] = {}
        self._envelope: bytes | None = None
        self.final: dict[str, Any] | None = None

    def _sse(self, event: Event) -> bytes:
        event["sequence_number"] = self._sequence
        self._sequence += 1
        return b"event: " + event["type"].encode() + b"\ndata: " + _encode(event) + b"\n\n"

    def _lifecycle(self, kind: str) -> bytes:
        # created / in_progress / queued carry the same in-progress Response: encode it once.
        if self._envelope is None:
            self._envelope = _encode(skeleton(self.parsed, self.response_id, self.route.label, self.created_at))
        sequence = self._sequence
        self._sequence += 1
        name = kind.encode()
        return (b"event: " + name + b'\ndata: {"type":"' + name + b'","response":' + self._envelope
                + b',"sequence_number":' + str(sequence).encode() + b"}\n\n")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        error_sent = False
        try:
            batch: list[Event] | None = self._first
            while batch is not None:
                out = []
                for event in batch:
                    kind = event["type"]
                    if kind in _LIFECYCLE:
                        out.append(self._lifecycle(kind))
                        continue
                    if kind in _TERMINAL:
                        out.append(self._sse(self._terminal(event)))
                        yield b"".join(out)
                        return
                    elif kind == "error":
                        error_sent = True
                        _flatten_error(event)
                    elif kind == "response.output_item.done":
                        self._done_items[event["output_index"]] = event["item"]
                    out.append(self._sse(event))
                if out:
                    yield b"".join(out)
                batch = await anext(self._batches, None)
            code, message = "upstream_stream_error", "The upstream ended the stream before the response completed."
        except GatewayError as exc:
            code, message = stream_failure(exc)
        except Exception as exc:  # any break in the upstream stream ends in response.failed
            code, message = stream_failure(exc)
            message = self.gateway.adapters[self.route.provider].redact_secrets(message)
            log.warning("stream from %s broke: %s", self.route.label, message)
        if not error_sent:
            yield self._sse({"type": "error", "code": code, "message": message, "param": None})
        # The Response's error.code has a fixed vocabulary; the precise code is in the error event.
        failed_code = "rate_limit_exceeded" if "rate_limit" in code else "server_error"
        yield self._sse(self._terminal({"type": "response.failed", "response": {
            "status": "failed", "error": {"code": failed_code, "message": message}}}))

    def _terminal(self, event: Event) -> Event:
        result = dict(event.get("response") or {})
        if not result.get("output"):
            result["output"] = [self._done_items[i] for i in sorted(self._done_items)]
        if event["type"] == "response.failed":
            result["status"] = "failed"
        elif event["type"] == "response.incomplete":
            result["status"] = "incomplete"
        elif result.get("status") not in ("completed", "incomplete"):
            # Some Responses-compatible servers say e.g. "complete"; the event type is authoritative.
            result["status"] = "completed"
        self.final = self.gateway._finish(self.parsed, self.route, result, self.response_id, self.created_at)
        return {"type": event["type"], "response": self.final}

    async def close(self) -> None:
        """Release the upstream: after the client's response has ended, or when it is cancelled."""
        aclose = getattr(self._batches, "aclose", None)
        if aclose is not None:
            await aclose()


def _flatten_error(event: Event) -> None:
    # OpenAI's API nests the error (`{"error": {code, message, param}}`) while its SDK types read
    # the fields at the top level; carry both so every client finds them.
    nested = event.get("error")
    if isinstance(nested, dict):
        for key in ("code", "message", "param"):
            event.setdefault(key, nested.get(key))
    event.setdefault("code", None)
    event.setdefault("message", "The upstream reported an error.")
    event.setdefault("param", None)
