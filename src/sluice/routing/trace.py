"""The routing trace a Response carries: which routes were tried, in which order, and how each went."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.pipeline.context import Attempt, RequestContext


def routing_trace(ctx: RequestContext) -> dict[str, Any]:
    """`{"attempts": [...], "sort", "strategy"}` from the context's attempt records."""
    routing = ctx.client_request.req.routing
    sort = None
    if routing is not None:
        sort = (routing.model.sort if routing.model else None) or (routing.provider.sort if routing.provider
                                                                   else None)
    return {"attempts": [_attempt(attempt) for attempt in ctx.attempts], "sort": sort, "strategy": "ordered"}


def _attempt(attempt: Attempt) -> dict[str, Any]:
    error = attempt.error
    ended, first = attempt.ended, attempt.first_token
    return {
        "provider": attempt.route.provider,
        "model": attempt.route.model,
        "outcome": attempt.outcome,
        "status": 200 if attempt.outcome == "ok" else attempt.status,
        "error_code": error.code if error is not None else None,
        "latency_ms": round((ended - attempt.started) * 1000, 1) if ended is not None else None,
        "ttft_ms": round((first - attempt.started) * 1000, 1) if first is not None else None,
    }
