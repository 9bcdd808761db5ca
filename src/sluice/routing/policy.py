"""The routing policy: asked before and after every attempt the pipeline makes.

The attempt loop (`pipeline/attempts.py`) owns the mechanics — candidates in order, one attempt
record per call, the deadline, the cap on attempts — and asks the policy two questions: may this
route be tried now (`before_attempt`: a route in cooldown says no), and after an attempt ended,
what next (`after_attempt`: retry the same route after a pause, move to the next candidate, or
stop). Live metrics, cooldowns and cache affinity are policies; the loop does not change for them.
"""

from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sluice.config import RoutingConfig
from sluice.errors import CLIENT_FAULT, CONTEXT_LENGTH_EXCEEDED, UpstreamError
from sluice.routing.catalog import Route

if TYPE_CHECKING:
    from sluice.pipeline.context import Attempt, RequestContext


class Action(enum.Enum):
    RETRY = "retry"  # the same route again, after `Decision.delay` seconds
    NEXT = "next"  # the next candidate route
    STOP = "stop"  # no other attempt: the request has failed


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float = 0.0


NEXT = Decision(Action.NEXT)
STOP = Decision(Action.STOP)


@dataclass(frozen=True, slots=True)
class Skip:
    """Why a route is passed over without a call: recorded as an attempt with this outcome."""

    outcome: str = "skipped"  # "skipped" (cannot help this request) or "cooldown" (out of rotation)
    error: UpstreamError | None = None  # for a cooldown: what the route said last (e.g. a 429's Retry-After)


SKIPPED = Skip()


class RoutingPolicy(Protocol):
    def order(self, ctx: RequestContext, routes: list[Route]) -> list[Route]:
        """The planned candidates, reordered by what the policy knows (health, cache affinity)."""
        ...

    def before_attempt(self, ctx: RequestContext, route: Route) -> Skip | None:
        """None when `route` may be tried now; a `Skip` records it as passed over."""
        ...

    def after_attempt(self, ctx: RequestContext, attempt: Attempt) -> Decision:
        """Called once for every attempt when it ends (`ctx.attempts` holds the earlier ones).

        Only a failure's decision is acted on; after a success the call is the policy's chance
        to learn (latency, errors) and the answer is ignored.
        """
        ...


class DefaultPolicy:
    """Candidates in order; a retryable failure is retried `retries` times, then the next route.

    - A failure that says the request itself is wrong (400/413/422) stops at once: another route
      would refuse it too.
    - A context-length failure moves on, but only to a route whose model has a larger window:
      candidates whose known `context_window` is not larger than the largest that already
      overflowed are skipped (a route of unknown window is tried).
    - A retryable failure (connection, timeout, 408/409/429/5xx, an unreadable answer) is tried
      again on the same route after a jittered exponential backoff, or exactly the `Retry-After`
      the provider gave; one longer than `max_retry_wait`, or that would end past the request's
      deadline, moves on to the next candidate at once instead.
    - Anything else (the provider's credentials, billing or model: 401/402/403/404) moves on.
    """

    def __init__(self, config: RoutingConfig) -> None:
        self.config = config

    def order(self, ctx: RequestContext, routes: list[Route]) -> list[Route]:
        return routes

    def before_attempt(self, ctx: RequestContext, route: Route) -> Skip | None:
        return SKIPPED if too_small_after_overflow(ctx, route) else None

    def after_attempt(self, ctx: RequestContext, attempt: Attempt) -> Decision:
        error = attempt.error
        if error is None:
            return NEXT
        if error.code == CONTEXT_LENGTH_EXCEEDED:
            return NEXT  # a larger window may take it; `before_attempt` passes over the others
        if error.status in CLIENT_FAULT:
            return STOP
        tries = sum(1 for earlier in ctx.attempts if earlier.route == attempt.route and earlier.outcome == "error")
        if not error.retryable or tries > self.config.retries:
            return NEXT
        if error.retry_after is not None:
            delay = error.retry_after  # the provider said when: not sooner
        else:
            # Exponential backoff, jittered so that requests failing together don't retry in step.
            delay = self.config.retry_backoff * (2 ** (tries - 1)) * random.uniform(0.5, 1.0)
        if delay > self.config.max_retry_wait or time.monotonic() + delay > ctx.deadline:
            return NEXT
        return Decision(Action.RETRY, delay)


def too_small_after_overflow(ctx: RequestContext, route: Route) -> bool:
    """Whether a route cannot take a request that already overflowed a context window this large.

    After a context-length failure only a larger window can help. The bar is the largest known
    window that overflowed; a route of unknown window, or an overflow on one, says nothing
    about sizes, so such a route is tried.
    """
    if route.context_window is None:
        return False
    overflowed = [attempt.route.context_window for attempt in ctx.attempts
                  if attempt.error is not None and attempt.error.code == CONTEXT_LENGTH_EXCEEDED
                  and attempt.route.context_window is not None]
    return bool(overflowed) and route.context_window <= max(overflowed)
