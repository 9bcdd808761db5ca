"""The request context: one object that carries a request through the whole pipeline.

Built by the HTTP surface once the caller is known and the request is valid; every later step
(routing policy, guardrails, the attempt loop, stream stages, end-of-response hooks) reads and
writes it, so none of them needs another way to learn who is calling or what happened so far.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sluice.canonical.ids import new_id
from sluice.canonical.request import CanonicalRequest
from sluice.errors import GatewayError, UpstreamError
from sluice.routing.catalog import Route
from sluice.state.keys import Principal


@dataclass(slots=True)
class Attempt:
    """One call to one route: when it started, produced its first output, ended, and how.

    Times are `time.monotonic()` seconds. `outcome` is "pending" while it runs, then "ok",
    "error" (failed; `error` says why), "skipped" (the routing policy passed over it: it cannot
    help this request) or "cooldown" (out of rotation after failures or a rate limit).
    """

    route: Route
    started: float
    first_token: float | None = None
    ended: float | None = None
    outcome: str = "pending"
    error: UpstreamError | None = None
    # Tokens a failed attempt used (a model-side failure the provider still bills), when known.
    usage: dict[str, Any] | None = None

    @property
    def status(self) -> int | None:
        """The HTTP status of the failure, None while pending or after success."""
        return self.error.status if self.error is not None else None

    def succeed(self, now: float) -> None:
        self.outcome = "ok"
        self.ended = now

    def fail(self, error: UpstreamError, now: float) -> None:
        self.outcome = "error"
        self.error = error
        self.ended = now


@dataclass(slots=True)
class RequestContext:
    """Who is calling, what they asked, and everything the pipeline learns while serving it.

    `client_request` stays as the client sent it: the Response echoes it. `request` is what the
    upstream will see: a stage that rewrites the request (redaction, a conversation rebuilt from
    `previous_response_id`) replaces it, and adapters read only this one.
    """

    caller: Principal
    client_request: CanonicalRequest
    request: CanonicalRequest
    response_id: str
    created_at: int  # Unix seconds: the Response's `created_at`
    arrived: float  # monotonic
    deadline: float  # monotonic: no new attempt starts after it
    attempts: list[Attempt] = field(default_factory=list)
    # Per-request state of the guardrails (e.g. a redaction's placeholder map), by guardrail name.
    guardrails: dict[str, Any] = field(default_factory=dict)
    # Per-request state of the routing policy (the prompt-prefix key its choice is remembered under).
    routing: dict[str, Any] = field(default_factory=dict)
    route: Route | None = None  # the route that serves the response, once one has started
    # Hosted tools the serving route's protocol has no equivalent for and left out of the request
    # (provider `unsupported_tools: drop`); the surface names them in `x-sluice-dropped-tools`.
    dropped_tools: list[str] = field(default_factory=list)
    response: dict[str, Any] | None = None  # the final Response, once built
    error: GatewayError | None = None  # why the request failed, when no Response could be built

    @classmethod
    def create(cls, caller: Principal, request: CanonicalRequest, *, deadline_seconds: float) -> RequestContext:
        now = time.monotonic()
        return cls(caller=caller, client_request=request, request=request, response_id=new_id("resp"),
                   created_at=int(time.time()), arrived=now, deadline=now + deadline_seconds)
