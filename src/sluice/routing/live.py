"""What the gateway learns while it routes: live metrics, route health, cache affinity.

One `LiveRouting` per process, shared by every request. The attempt loop's policy feeds it once
per finished attempt (`observe`); the planner and the policy read it. With `redis` configured,
`routing/shared.py` keeps it in step with the other replicas in the background, never on the
request path.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from sluice.accounting.cost import response_cost
from sluice.accounting.estimate import estimate_usage
from sluice.config import RoutingConfig
from sluice.errors import UpstreamError
from sluice.routing.affinity import Affinity
from sluice.routing.catalog import Catalog, Route
from sluice.routing.health import FAILING, RATE_LIMITED, RouteHealth
from sluice.routing.metrics import RouteMetrics
from sluice.routing.policy import Decision, RoutingPolicy, Skip
from sluice.routing.router import DEFAULT_OUTPUT_TOKENS, requested_sort

if TYPE_CHECKING:
    from sluice.pipeline.context import Attempt, RequestContext

log = logging.getLogger("sluice")


class LiveRouting:
    def __init__(self, config: RoutingConfig) -> None:
        self.config = config
        self._sharing = False
        self.reset()

    def reset(self) -> None:
        """Forget everything learned: measurements, cooldowns, affinities."""
        self.metrics = RouteMetrics()
        self.health = RouteHealth(self.config.cooldown)
        self.affinity = Affinity(self.config.affinity)
        self.health.sharing = self.affinity.sharing = self._sharing

    @property
    def sharing(self) -> bool:
        """Whether `routing/shared.py` collects what is learned here for the other replicas."""
        return self._sharing

    @sharing.setter
    def sharing(self, on: bool) -> None:
        self._sharing = self.health.sharing = self.affinity.sharing = on

    def observe(self, ctx: RequestContext, attempt: Attempt) -> None:
        """Learn from one finished attempt (called once per attempt, success or failure)."""
        if attempt.outcome not in ("ok", "error"):
            return
        label = attempt.route.label
        ended = attempt.ended if attempt.ended is not None else time.monotonic()
        latency = ended - attempt.started
        ttft = attempt.first_token - attempt.started if attempt.first_token is not None else None
        error = attempt.error
        if error is not None and not self.health.counts(error):
            # The request's own fault (or the client leaving) says nothing about the route; a
            # half-open probe that ended so hands the probe on to the next caller.
            if ctx.routing.get("probe") == label:
                self.health.release(label)
            return
        usage = (ctx.response or {}).get("usage") if attempt.outcome == "ok" else None
        self.metrics.record(label, ok=attempt.outcome == "ok", latency=latency, ttft=ttft,
                            output_tokens=usage.get("output_tokens") if usage else None,
                            input_tokens=usage.get("input_tokens") if usage else None)
        if error is None:
            self.health.success(label)
            if usage is not None:
                self.affinity.served(ctx, attempt.route, usage)
        else:
            self.health.failure(label, error)


class LivePolicy:
    """The routing policy with what the gateway has learned: health, cache affinity, measurements.

    Wraps the retry policy (`routing/policy.py`): it reorders the planned candidates (a route
    holding the prompt's cache first), passes over routes in cooldown, and feeds every finished
    attempt back into `LiveRouting`. A request whose model has one candidate pays one dict lookup.
    """

    def __init__(self, inner: RoutingPolicy, live: LiveRouting, catalog: Catalog | None = None) -> None:
        self.inner = inner
        self.live = live
        self.catalog = catalog

    def order(self, ctx: RequestContext, routes: list[Route]) -> list[Route]:
        routes = self.inner.order(ctx, routes)
        live = self.live
        health = live.health
        is_cooling = health.is_cooling
        for route in routes:
            if not is_cooling(route.label):
                break
        else:
            # Nothing is in rotation: rather than refuse the request, the failing route that comes
            # back soonest is tried anyway (routes cooling for a rate limit are not: the provider
            # said when to come back, and the client gets that as a 429).
            failing = [route for route in routes if health.reason(route.label) == FAILING]
            if failing:
                ctx.routing["last_resort"] = min(failing, key=lambda route: health.until(route.label)).label
        affinity = live.affinity
        if len(routes) < 2 or not affinity.config.enabled:
            return routes
        try:
            return self._sticky(ctx, routes)
        except Exception:  # what affinity knows only reorders: a bug there must not fail the request
            log.exception("cache affinity failed; routes kept in their planned order")
            return routes

    def _sticky(self, ctx: RequestContext, routes: list[Route]) -> list[Route]:
        """`routes` with the one holding the request's prompt cache first, when it should be."""
        live = self.live
        health, affinity = live.health, live.affinity
        key = affinity.key(ctx)
        if key is None:
            return routes
        ctx.routing["affinity"] = key
        held = affinity.lookup(key)
        if held is None:
            return routes
        label, warm = held
        index = next((i for i, route in enumerate(routes) if route.label == label), 0)
        if index == 0 or health.is_cooling(label) or self._pinned(ctx.client_request.req.model):
            return routes
        sticky = routes[index]
        cost_sorted = requested_sort(ctx.client_request, live.config) == "cost"
        if cost_sorted and not _cheaper_warm(ctx, sticky, routes[0], warm):
            return routes  # a colder route is cheaper even paying full price for the prefix
        ctx.routing["strategy"] = "affinity"
        return [sticky, *routes[:index], *routes[index + 1:]]

    def before_attempt(self, ctx: RequestContext, route: Route) -> Skip | None:
        health = self.live.health
        cooling = health.cooling(route.label)
        if cooling is None and health.is_cooling(route.label):
            # Past its cooldown, this request just became the route's half-open probe: it must
            # hand the probe on if it ends without an answer about the route.
            ctx.routing["probe"] = route.label
            skip = self.inner.before_attempt(ctx, route)
            if skip is not None:
                health.release(route.label)
            return skip
        if cooling is not None and ctx.routing.get("last_resort") != route.label \
                and not (cooling[0] == RATE_LIMITED and _retrying(ctx, route)):
            # (A retry the policy scheduled after the route's own Retry-After has waited for it.)
            reason, left = cooling
            if reason == RATE_LIMITED:
                error = UpstreamError(f"Route {route.label} is rate limited for {left:.0f} more seconds.",
                                      provider=route.provider, retryable=True, retry_after=left, status=429,
                                      code="rate_limit_exceeded")
            else:
                error = UpstreamError(f"Route {route.label} is out of rotation after repeated failures "
                                      f"(back in {left:.0f} s).", provider=route.provider, retryable=True,
                                      retry_after=left, status=503, code="route_cooldown")
            return Skip("cooldown", error)
        return self.inner.before_attempt(ctx, route)

    def after_attempt(self, ctx: RequestContext, attempt: Attempt) -> Decision:
        try:
            self.live.observe(ctx, attempt)
        except Exception:  # learning from an attempt must never fail the request
            log.exception("routing could not record the attempt on %s", attempt.route.label)
        return self.inner.after_attempt(ctx, attempt)

    def _pinned(self, model: str) -> bool:
        """A `provider/model` request: the client chose the route, affinity does not move it.

        (A catalog model whose own name has a slash, `meta-llama/x`, is not a pin.)
        """
        if self.catalog is not None:
            return self.catalog.pinned_provider(model) is not None
        return "/" in model


def _retrying(ctx: RequestContext, route: Route) -> bool:
    attempts = ctx.attempts
    return bool(attempts) and attempts[-1].route is route and attempts[-1].outcome == "error"


def _cheaper_warm(ctx: RequestContext, warm_route: Route, first: Route, warm: int) -> bool:
    """Whether the warm route, reading `warm` tokens from its cache, costs no more than `first` cold."""
    if warm_route.price is None:
        return False
    if first.price is None:
        return True
    tokens = estimate_usage(ctx.request, [])["input_tokens"]
    output = ctx.request.req.max_output_tokens or DEFAULT_OUTPUT_TOKENS
    cached = min(warm, tokens)

    def usage(hit: int) -> dict[str, Any]:
        return {"input_tokens": tokens, "output_tokens": output,
                "input_tokens_details": {"cached_tokens": hit, "cached_tokens_created": 0}}

    return (response_cost(usage(cached), warm_route.price) or 0.0) <= (response_cost(usage(0), first.price) or 0.0)
