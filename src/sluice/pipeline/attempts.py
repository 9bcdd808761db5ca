"""The one attempt loop: every call to an upstream, streaming or not, goes through `run_attempts`.

It walks the candidate routes in order, records an `Attempt` per call on the context, asks the
routing policy before and after each one, and stops at the cap on attempts or the request's
deadline. What "an attempt" does is the caller's `start` function: a whole answer for a
non-streaming request, or a stream opened and read up to its first content for a streaming one —
so a failure before any content moves on to the next route the same way in both modes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sluice.config import RoutingConfig
from sluice.errors import RETRYABLE, GatewayError, NoRouteSucceeded, UpstreamError, status_for_code
from sluice.pipeline.context import Attempt, RequestContext
from sluice.providers.base import UPSTREAM_CALLED, Adapter
from sluice.routing.catalog import Route
from sluice.routing.policy import Action, RoutingPolicy

log = logging.getLogger("sluice")

T = TypeVar("T")
Start = Callable[[Route, Attempt], Awaitable[T]]

# Upstream statuses passed on to the client as they are when the last route fails with them.
_PASSED_ON = frozenset({400, 401, 403, 404, 413, 422, 429})


async def run_attempts(ctx: RequestContext, routes: Sequence[Route], start: Start[T], *, policy: RoutingPolicy,
                       adapters: dict[str, Adapter], limits: RoutingConfig) -> T:
    """The first result `start` gets from a route; raises the request's error when none succeeds."""
    last: UpstreamError | None = None
    calls = 0
    for route in routes:
        while True:
            if calls >= limits.max_attempts or time.monotonic() >= ctx.deadline:
                raise final_error(last)
            skip = policy.before_attempt(ctx, route)
            if skip is not None:
                now = time.monotonic()
                ctx.attempts.append(Attempt(route, now, ended=now, outcome=skip.outcome, error=skip.error))
                break
            calls += 1
            attempt = Attempt(route, time.monotonic())
            ctx.attempts.append(attempt)
            UPSTREAM_CALLED.set(False)
            try:
                return await start(route, attempt)
            except Exception as exc:  # any adapter failure is this route's failure
                error = as_upstream_error(exc, route, adapters[route.provider])
            attempt.fail(error, time.monotonic())
            last = error
            log.warning("route %s failed: %s %s", route.label, error.status, error.message)
            decision = policy.after_attempt(ctx, attempt)
            if decision.action is Action.STOP:
                raise final_error(error)
            if decision.action is Action.NEXT:
                break
            await asyncio.sleep(decision.delay)
    raise final_error(last)


def as_upstream_error(exc: Exception, route: Route, adapter: Adapter) -> UpstreamError:
    """What went wrong on a route, as an upstream error; a refusal of the request itself is re-raised."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, GatewayError):
        raise exc  # the request itself was refused (e.g. a field the protocol cannot carry)
    if not UPSTREAM_CALLED.get():
        # Nothing was sent: building the request failed, which is Sluice's bug, not the route's.
        log.exception("building the request for %s failed", route.label)
        raise GatewayError("The server had an error while processing your request.", code="internal_error")
    # An answer the adapter could not read (malformed JSON, unexpected shape): the route failed,
    # another may not. Never a 500 for the client.
    log.warning("route %s sent an unreadable answer: %s", route.label, type(exc).__name__)
    return UpstreamError(f"{adapter.name}: the upstream sent an answer Sluice could not read "
                         f"({type(exc).__name__}).", provider=adapter.name, retryable=True, status=502,
                         code="upstream_invalid_response")


def error_from_event(event: dict[str, Any], adapter: Adapter) -> UpstreamError:
    """An `error` or `response.failed` event that ended a stream, as an upstream error."""
    if event["type"] == "response.failed":
        response = event.get("response")
        source = response.get("error") if isinstance(response, dict) else None
    else:
        source = event
    source = source if isinstance(source, dict) else {}
    code = source.get("code")
    code = code if isinstance(code, str) else None
    message = source.get("message")
    message = message if isinstance(message, str) and message else "The upstream reported an error."
    status = status_for_code(code)
    return UpstreamError(adapter.redact_secrets(message), provider=adapter.name, retryable=status in RETRYABLE,
                         status=status, code=code, param=source.get("param") if isinstance(source.get("param"), str)
                         else None)


def final_error(last: UpstreamError | None) -> GatewayError:
    """The client's error when no route served the request."""
    if last is None:
        return NoRouteSucceeded("No route could serve the request.", code="no_route")
    if last.status in _PASSED_ON:
        return last
    return NoRouteSucceeded(last.message, code=last.code or "upstream_error")
