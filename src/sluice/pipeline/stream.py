"""A committed stream: the serving route's canonical events, through the stages, ending exactly once.

The attempt loop hands over a stream once its first content arrived (so nothing has reached the
client before then). From there `ResponseStream` yields batches of canonical Responses events —
no sequence numbers, no SSE: the HTTP surface encodes them — and guarantees the envelope:

- `response.created` and `response.in_progress` first, carrying the in-progress Response;
- every upstream text on a failure path passes the provider's secret redaction;
- exactly one terminal event, last: the upstream's `response.completed` / `response.incomplete`
  with the gateway's Response merged in, or — when the upstream reports an error, breaks, or just
  ends — an `error` event followed by `response.failed`;
- the end-of-response hooks awaited before the terminal event is yielded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from sluice.accounting.estimate import estimate_usage
from sluice.canonical.partial import PartialOutput
from sluice.canonical.response import skeleton
from sluice.errors import GatewayError, UpstreamError
from sluice.pipeline.attempts import error_from_event
from sluice.pipeline.context import Attempt, RequestContext
from sluice.pipeline.stages import Batches, Event, Stage
from sluice.providers.base import Adapter
from sluice.providers.transport import describe_network_error

if TYPE_CHECKING:
    from sluice.pipeline.core import Pipeline

log = logging.getLogger("sluice")

_DONE = frozenset({"response.completed", "response.incomplete"})
_FAILED = frozenset({"error", "response.failed"})
_SPECIAL = _DONE | _FAILED | {"response.output_item.added", "response.output_item.done"}
# `Response.error.code` has a fixed vocabulary in the SDKs; the precise code is in the error event.
_FAILED_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})


class ResponseStream:
    """Iterate for event batches; `aclose()` releases the upstream once the client's response ended."""

    def __init__(self, pipeline: Pipeline, ctx: RequestContext, attempt: Attempt, first: list[Event],
                 upstream: Batches, stages: Sequence[Stage]) -> None:
        self.pipeline = pipeline
        self.ctx = ctx
        self.attempt = attempt
        self.adapter: Adapter = pipeline.adapters[attempt.route.provider]
        self._upstream = upstream
        self._first: list[Event] | None = first
        self._source: Batches | None = None
        if stages:
            source: Batches = _chain(first, upstream)
            # Answer stages run in reverse order: the first to touch the request is the last here.
            for stage in reversed(stages):
                source = stage.events(ctx, source)
            self._source, self._first = source, None
        self._output = PartialOutput()
        self._envelope: dict[str, Any] | None = None
        self.ended = False

    def __aiter__(self) -> AsyncIterator[list[Event]]:
        return self._events()

    async def _events(self) -> AsyncIterator[list[Event]]:
        ctx = self.ctx
        envelope = self._envelope = skeleton(ctx.client_request, ctx.response_id, self.attempt.route.label,
                                             ctx.created_at)
        out: list[Event] = [{"type": "response.created", "response": envelope},
                            {"type": "response.in_progress", "response": envelope}]
        failure: dict[str, Any] | None = None
        source = self._source or self._upstream
        partial = self._output
        keep = partial.events.append
        try:
            batch = self._first if self._source is None else await anext(source, None)
            self._first = None
            while batch is not None:
                for event in batch:
                    kind = event["type"]
                    if kind not in _SPECIAL:
                        keep(event)
                    elif kind == "response.output_item.added":
                        partial.item_added(event)
                    elif kind == "response.output_item.done":
                        partial.item_done(event)
                    elif kind in _DONE:
                        out.append(await self._finish(event))
                        yield out
                        return
                    else:
                        failure = self._failure_from(error_from_event(event, self.adapter))
                        reported = (event.get("response") or {}).get("usage")
                        if reported:  # an upstream's response.failed may say what it used
                            failure["usage"] = reported
                        break
                    out.append(event)
                if failure is not None:
                    break
                if out:
                    yield out
                    out = []
                batch = await anext(source, None)
        except GatewayError as exc:
            failure = self._failure_from(exc)
        except Exception as exc:  # any break in the upstream stream ends in response.failed
            failure = {"code": "upstream_stream_error", "message": self.adapter.redact_secrets(
                f"The upstream stream broke: {describe_network_error(exc)}")}
        if failure is None:
            failure = {"code": "upstream_stream_error",
                       "message": "The upstream ended the stream before the response completed."}
        log.warning("stream from %s failed: %s", self.attempt.route.label, failure["message"])
        out.append({"type": "error", "code": failure["code"], "message": failure["message"],
                    "param": failure.get("param")})
        out.append(await self._fail(failure))
        yield out

    def _failure_from(self, exc: GatewayError) -> dict[str, Any]:
        return {"code": exc.code or exc.type, "message": self.adapter.redact_secrets(exc.message),
                "param": exc.param, "status": exc.status}

    async def _finish(self, event: Event) -> Event:
        result = dict(event.get("response") or {})
        if not result.get("output"):
            result["output"] = self._output.output()
        if event["type"] == "response.incomplete":
            result["status"] = "incomplete"
        elif result.get("status") not in ("completed", "incomplete"):
            # Some Responses-compatible servers say e.g. "complete"; the event type is authoritative.
            result["status"] = "completed"
        self.attempt.succeed(time.monotonic())
        response = self.pipeline.respond(self.ctx, self.attempt, result, self._envelope)
        await self._end()
        return {"type": event["type"], "response": response}

    async def _fail(self, failure: dict[str, Any]) -> Event:
        code = failure["code"]
        error = UpstreamError(failure["message"], provider=self.adapter.name, retryable=True,
                              status=failure.get("status") or 502, code=code)
        self.attempt.fail(error, time.monotonic())
        if code not in _FAILED_CODES:
            code = "rate_limit_exceeded" if "rate_limit" in code or code == "insufficient_quota" else "server_error"
        output = self._output.output()
        # The provider billed what it generated; its usage would have come at the end.
        usage = failure.get("usage") or estimate_usage(self.ctx.request, output)
        result = {"status": "failed", "error": {"code": code, "message": failure["message"]}, "output": output,
                  "usage": usage}
        response = self.pipeline.respond(self.ctx, self.attempt, result, self._envelope)
        await self._end()
        return {"type": "response.failed", "response": response}

    async def _end(self) -> None:
        self.ended = True
        self.pipeline.policy.after_attempt(self.ctx, self.attempt)
        await self.pipeline.end(self.ctx)

    async def aclose(self) -> None:
        """Release the upstream: after the client's response has ended, or when it is cancelled."""
        if not self.ended:
            # The client left (or the surface stopped reading) before the terminal event.
            self.ended = True
            self.pipeline.abandon(self.ctx)
        if self._source is not None:
            await self._source.aclose()  # type: ignore[attr-defined]
        aclose = getattr(self._upstream, "aclose", None)
        if aclose is not None:
            await aclose()


async def _chain(first: list[Event], rest: Batches) -> Batches:
    yield first
    async for batch in rest:
        yield batch
