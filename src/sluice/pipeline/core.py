"""The pipeline, independent of HTTP:

    request -> validate -> stages (guardrails, history) -> route -> adapter -> canonical events
            -> stages (restore) -> envelope + accounting -> hooks (store, ledger, metrics) -> client

The HTTP surface validates the request and builds the `RequestContext`; `Pipeline.create` answers
a non-streaming request with the finished Response, `Pipeline.open_stream` a streaming one with a
`ResponseStream` that has already received its first content. Both go through the one attempt
loop, so failover, retries and the routing policy behave the same in either mode.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from sluice.accounting.cost import response_cost
from sluice.canonical.request import CanonicalRequest
from sluice.canonical.response import finalize, skeleton
from sluice.config import Config
from sluice.errors import GatewayError, InvalidRequest, NotFound, UpstreamError
from sluice.pipeline.attempts import Start, T, error_from_event, run_attempts
from sluice.pipeline.context import Attempt, RequestContext
from sluice.pipeline.stages import Batches, Event, Hook, Stage, run_hooks
from sluice.pipeline.stream import ResponseStream
from sluice.providers import create_adapter
from sluice.providers.base import Adapter
from sluice.routing.affinity import derived_prompt_cache_key
from sluice.routing.catalog import Catalog, Route
from sluice.routing.live import LivePolicy, LiveRouting
from sluice.routing.policy import DefaultPolicy, RoutingPolicy
from sluice.routing.router import plan
from sluice.routing.trace import routing_trace
from sluice.state.keys import Principal

log = logging.getLogger("sluice")


# Events that open an item or a part and show nothing yet: a stream that fails after them and
# before any content still fails over.
_SCAFFOLDING = frozenset({"response.output_item.added", "response.content_part.added",
                          "response.reasoning_summary_part.added"})
_FAILURES = frozenset({"error", "response.failed"})


class Pipeline:
    def __init__(self, config: Config, catalog: Catalog, *, policy: RoutingPolicy | None = None,
                 stages: Sequence[Stage] = (), hooks: Sequence[Hook] = ()) -> None:
        self.config = config
        self.catalog = catalog
        self.adapters: dict[str, Adapter] = {
            name: create_adapter(name, provider) for name, provider in catalog.providers.items()
        }
        # What routing learns while serving (measurements, route health, cache affinity).
        self.live = LiveRouting(config.routing)
        self.policy: RoutingPolicy = policy or LivePolicy(DefaultPolicy(config.routing), self.live, catalog)
        self.stages: list[Stage] = list(stages)
        self.hooks: list[Hook] = list(hooks)
        self._background: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for adapter in self.adapters.values():
            await adapter.close()

    def context(self, caller: Principal, request: CanonicalRequest) -> RequestContext:
        """The context for a validated request from `caller` (the HTTP surface's entry point)."""
        return RequestContext.create(caller, request, deadline_seconds=self.config.routing.deadline)

    # --- the two modes -------------------------------------------------------------------------

    async def create(self, ctx: RequestContext) -> dict[str, Any]:
        """Serve a non-streaming request: the first route that succeeds answers."""
        result = await self._attempt(ctx, functools.partial(self._whole_answer, ctx))
        attempt = ctx.attempts[-1]
        ctx.route = attempt.route
        attempt.first_token = now = time.monotonic()
        attempt.succeed(now)
        for stage in reversed(self.stages):
            result = await stage.result(ctx, result)
        response = self.respond(ctx, attempt, result)
        self.policy.after_attempt(ctx, attempt)  # after `respond`: the policy learns from the usage
        await self.end(ctx)
        return response

    async def open_stream(self, ctx: RequestContext) -> ResponseStream:
        """Start a streaming request; raises before anything is sent if no route produced content."""
        first, upstream = await self._attempt(ctx, functools.partial(self._first_content, ctx))
        return ResponseStream(self, ctx, ctx.attempts[-1], first, upstream, self.stages)

    async def _attempt(self, ctx: RequestContext, start: Start[T]) -> T:
        """The request stages, then the attempt loop over the request's routes."""
        try:
            routes = await self._prepare(ctx)
            return await run_attempts(ctx, routes, start, policy=self.policy, adapters=self.adapters,
                                      limits=self.config.routing)
        except GatewayError as exc:
            await self._refused(ctx, exc)
            raise
        except asyncio.CancelledError:
            self.abandon(ctx)
            raise

    async def _whole_answer(self, ctx: RequestContext, route: Route, attempt: Attempt) -> dict[str, Any]:
        adapter = self.adapters[route.provider]
        ctx.dropped_tools = adapter.dropped_tools(ctx.request)  # the attempt that answers leaves its own
        result = await adapter.create(ctx.request, route.model)
        if result.get("status") == "failed":
            # A model-side failure (e.g. a malformed tool call) fails the route, as it does before
            # a stream's first content; what it used stays on the attempt.
            attempt.usage = result.get("usage")
            raise error_from_event({"type": "response.failed", "response": result}, adapter)
        return result

    async def _first_content(self, ctx: RequestContext, route: Route, attempt: Attempt
                             ) -> tuple[list[Event], Batches]:
        """Open the route's stream and read it up to its first content (or a finished answer).

        Holding back until then is what lets a stream fail over invisibly: an error event, a
        `response.failed` or a stream that ends before any content is this route's failure, and
        the client has seen nothing yet.
        """
        adapter = self.adapters[route.provider]
        ctx.dropped_tools = adapter.dropped_tools(ctx.request)  # the attempt that answers leaves its own
        upstream = adapter.stream(ctx.request, route.model)
        held: list[Event] = []
        try:
            while True:
                batch = await anext(upstream, None)
                if batch is None:
                    raise UpstreamError(f"{adapter.name}: the upstream closed the stream without sending anything.",
                                        provider=adapter.name, retryable=True, status=502,
                                        code="upstream_empty_stream")
                for event in batch:
                    kind = event["type"]
                    if kind in _FAILURES:
                        attempt.usage = (event.get("response") or {}).get("usage")
                        raise error_from_event(event, adapter)
                    if kind not in _SCAFFOLDING:
                        break  # content: the stream is this route's from here on
                else:
                    held += batch  # only empty items and parts opened so far: nothing to show yet
                    continue
                attempt.first_token = time.monotonic()
                ctx.route = route
                return (held + batch if held else batch), upstream
        except BaseException:
            await upstream.aclose()  # type: ignore[attr-defined]  # releases the upstream connection
            raise

    # --- before routing ------------------------------------------------------------------------

    async def _prepare(self, ctx: RequestContext) -> list[Route]:
        """Run the request stages, then list the routes that can carry the request, in order."""
        for stage in self.stages:
            await stage.request(ctx)
        request = ctx.request
        if request.req.prompt_cache_key is None and self.config.routing.affinity.derive_prompt_cache_key:
            # As the reference does: one cache bucket per API key (and end user) at providers that
            # take a `prompt_cache_key`; the others never see it. The echo keeps the client's value.
            request = ctx.request = request.replace(
                prompt_cache_key=derived_prompt_cache_key(ctx.caller, request.req.user))
        if request.req.previous_response_id is not None:
            # Stored conversations are not kept yet, so no id can be found.
            raise NotFound(f"Previous response with id '{request.req.previous_response_id}' not found.",
                           param="previous_response_id", code="previous_response_not_found")
        routing = request.req.routing
        limit = self.config.routing.max_fallbacks
        for name, part in (("model", routing and routing.model), ("provider", routing and routing.provider)):
            if part is not None and len(part.fallbacks) > limit:
                raise InvalidRequest(f"'routing.{name}.fallbacks' lists {len(part.fallbacks)} entries; at most "
                                     f"{limit} are allowed.", param=f"routing.{name}.fallbacks",
                                     code="too_many_fallbacks")
        # A route whose wire protocol cannot carry the request is skipped; if none can, the
        # first route's reason is the answer.
        able: list[Route] = []
        refusal: InvalidRequest | None = None
        for route in plan(request, self.catalog, self.config.routing, metrics=self.live.metrics):
            try:
                self.adapters[route.provider].check(request, route.model)
            except InvalidRequest as exc:
                refusal = refusal or exc
                continue
            able.append(route)
        if not able and refusal is not None:
            raise refusal
        return self.policy.order(ctx, able)

    # --- the end of a request ------------------------------------------------------------------

    def respond(self, ctx: RequestContext, attempt: Attempt, result: dict[str, Any],
                envelope: dict[str, Any] | None = None) -> dict[str, Any]:
        """The client's Response from an upstream result: envelope, echo, normalized usage, cost.

        `envelope`: the in-progress Response a stream began with (the same echo, built once).
        """
        route = attempt.route
        if envelope is None:
            envelope = skeleton(ctx.client_request, ctx.response_id, route.label, ctx.created_at)
        response = finalize(envelope, result)
        # An unpriced route (an ad-hoc `provider/model`) costs an unknown amount, not nothing.
        response["cost"] = {"total": response_cost(response["usage"], route.price)}
        response["routing"] = routing_trace(ctx, self.config.routing)
        ctx.response = response
        return response

    async def end(self, ctx: RequestContext) -> None:
        """The end-of-response hooks, awaited before the client sees the end."""
        if self.hooks:
            await run_hooks(self.hooks, ctx)

    async def _refused(self, ctx: RequestContext, error: GatewayError) -> None:
        ctx.error = error
        await self.end(ctx)

    def abandon(self, ctx: RequestContext) -> None:
        """The client left before the end: record it and run the hooks in the background.

        The request's task is being cancelled, so the hooks (which may charge what the provider
        already billed) run in a task of their own.
        """
        gone = UpstreamError("The client disconnected before the response completed.", provider="client",
                             retryable=False, status=499, code="client_disconnected")
        now = time.monotonic()
        for attempt in ctx.attempts:
            if attempt.outcome == "pending":
                attempt.fail(gone, now)
                # Every attempt ends with the policy told (it hands on a half-open probe this one held).
                try:
                    self.policy.after_attempt(ctx, attempt)
                except Exception:
                    log.exception("the routing policy failed on an abandoned attempt")
        ctx.error = gone
        if self.hooks:
            task = asyncio.get_running_loop().create_task(run_hooks(self.hooks, ctx))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
