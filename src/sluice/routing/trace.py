"""The routing trace a Response carries: which routes were tried, in which order, and how each went."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sluice.config import RoutingConfig
from sluice.routing.router import AUTO, requested_sort

if TYPE_CHECKING:
    from sluice.pipeline.context import Attempt, RequestContext


def routing_trace(ctx: RequestContext, config: RoutingConfig) -> dict[str, Any]:
    """`{"attempts": [...], "sort", "strategy"}` from the context's attempt records.

    `sort`: what the candidates were ordered by (the request's, else the config's default).
    `strategy`: how the first candidate was chosen — "affinity" (the route holding the prompt's
    cache went first), "auto" (`model: "auto"` chose among the catalog), "sorted" (by `sort`), or
    "ordered" (the config's order).
    """
    request = ctx.client_request
    sort = requested_sort(request, config)
    strategy = ctx.routing.get("strategy")
    if strategy is None:
        strategy = "auto" if request.req.model.lower() == AUTO else "sorted" if sort else "ordered"
    return {"attempts": [_attempt(attempt) for attempt in ctx.attempts], "sort": sort, "strategy": strategy}


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
