"""What the gateway learns while it routes: live metrics, route health, cache affinity.

One `LiveRouting` per process, shared by every request. The attempt loop's policy feeds it once
per finished attempt (`observe`); the planner and the policy read it. With `redis` configured,
`routing/shared.py` keeps it in step with the other replicas in the background, never on the
request path.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sluice.config import RoutingConfig
from sluice.routing.affinity import Affinity
from sluice.routing.health import RouteHealth
from sluice.routing.metrics import RouteMetrics

if TYPE_CHECKING:
    from sluice.pipeline.context import Attempt, RequestContext


class LiveRouting:
    def __init__(self, config: RoutingConfig) -> None:
        self.config = config
        self.metrics = RouteMetrics()
        self.health = RouteHealth(config.cooldown)
        self.affinity = Affinity(config.affinity)

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
            return  # the request's own fault (or the client leaving) says nothing about the route
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
