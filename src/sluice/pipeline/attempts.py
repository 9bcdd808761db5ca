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
from sluice.errors import (
    CLIENT_FAULT,
    CONTEXT_LENGTH_EXCEEDED,
    RETRYABLE,
    GatewayError,
    NoRouteSucceeded,
    RateLimited,
    UpstreamError,
    status_for_code,
)
from sluice.pipeline.context import Attempt, RequestContext
from sluice.providers.base import UPSTREAM_CALLED, Adapter
from sluice.providers.transport import ATTEMPT_LIMITS, AttemptLimits
from sluice.routing.catalog import Route
from sluice.routing.policy import Action, RoutingPolicy

log = logging.getLogger("sluice")

T = TypeVar("T")
Start = Callable[[Route, Attempt], Awaitable[T]]

# Attempt outcomes that are a route's failure to serve: a call that failed, and a route skipped
# because it is cooling down (recorded with the error that put it there, e.g. a 429's wait).
_FAILED = frozenset({"error", "cooldown"})


async def run_attempts(ctx: RequestContext, routes: Sequence[Route], start: Start[T], *, policy: RoutingPolicy,
                       adapters: dict[str, Adapter], limits: RoutingConfig) -> T:
    """The first result `start` gets from a route; raises the request's error when none succeeds."""
    calls = 0
    for route in routes:
        while True:
            if calls >= limits.max_attempts or time.monotonic() >= ctx.deadline:
                raise final_error(ctx)
            skip = policy.before_attempt(ctx, route)
            if skip is not None:
                now = time.monotonic()
                ctx.attempts.append(Attempt(route, now, ended=now, outcome=skip.outcome, error=skip.error))
                break
            calls += 1
            attempt = Attempt(route, time.monotonic())
            ctx.attempts.append(attempt)
            UPSTREAM_CALLED.set(False)
            # The transport bounds the call by these, and a stream by them until it is read to its end.
            ATTEMPT_LIMITS.set(AttemptLimits(route.timeouts, ctx.deadline, limits.deadline))
            try:
                return await start(route, attempt)
            except Exception as exc:  # any adapter failure is this route's failure
                error = as_upstream_error(exc, route, adapters[route.provider])
            attempt.fail(error, time.monotonic())
            log.warning("route %s failed: %s %s", route.label, error.status, error.message)
            decision = policy.after_attempt(ctx, attempt)
            if decision.action is Action.STOP:
                raise final_error(ctx)
            if decision.action is Action.NEXT:
                break
            await asyncio.sleep(decision.delay)
    raise final_error(ctx)


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
    status = status_for_code(code, message)
    return UpstreamError(adapter.redact_secrets(message), provider=adapter.name, retryable=status in RETRYABLE,
                         status=status, code=code, param=source.get("param") if isinstance(source.get("param"), str)
                         else None)


def final_error(ctx: RequestContext) -> GatewayError:
    """The client's error when no route served the request, from every attempt it made.

    - the request itself is wrong (400/413/422 that stopped routing): that error, as the provider
      said it (message, param, code);
    - the last failure says the request exceeds the context window (no larger window was left):
      that 400 `context_length_exceeded`;
    - every route that failed was rate limited (a 429, or skipped while cooling down from one):
      429, with the soonest `Retry-After` any of them gave;
    - otherwise 424: no route could serve it, with the last provider's message and code. A
      provider's 401/402/403/404 always ends here: its credentials or its model are the gateway's
      problem, and passing the status on would tell the client its own key or model is wrong.
    """
    failures = [attempt.error for attempt in ctx.attempts if attempt.outcome in _FAILED and attempt.error is not None]
    if not failures:
        return NoRouteSucceeded("No route could serve the request.", code="no_route")
    last = failures[-1]
    if last.status in CLIENT_FAULT or last.code == CONTEXT_LENGTH_EXCEEDED:
        return last
    if all(error.status == 429 and not error.provider_fault for error in failures):
        waits = [error.retry_after for error in failures if error.retry_after is not None]
        return RateLimited(last.message, retry_after=min(waits) if waits else None,
                           code=last.code or "rate_limit_exceeded")
    # What a provider said last tells more than "out of rotation" (which that failure caused).
    called = [attempt.error for attempt in ctx.attempts if attempt.outcome == "error" and attempt.error is not None]
    if called:
        last = called[-1]
    return NoRouteSucceeded(_naming_provider(last), code=last.code or "upstream_error")


def _naming_provider(error: UpstreamError) -> str:
    """The error's message, saying which provider failed.

    HTTP and transport errors name it already ("p-openai: ...", "provider 'p-openai'"); one
    reported inside a stream may not, and "invalid x-api-key" alone would read as the client's key.
    """
    if error.message.startswith(f"{error.provider}:") or f"'{error.provider}'" in error.message:
        return error.message
    return f"{error.provider}: {error.message}"
