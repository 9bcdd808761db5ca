"""Stages and end-of-response hooks: where capabilities attach to the pipeline.

A **stage** sees the request before routing and the answer after the adapter: guardrails
(redaction and its restore), a conversation rebuilt from `previous_response_id`. Each of its
three methods defaults to passing things through, so a stage overrides only what it changes:

    request  -> [stage.request ...] -> route -> adapter
    answer   <- [stage.result / stage.events ...] <- adapter      (non-streaming / streaming)

Request stages run in order; answer stages run in reverse order, so the stage that changed the
request first is the last to see the answer (redaction masks first and restores last).

A **hook** runs once when a request ends — completed, incomplete, failed, or refused before any
upstream answered — with the finished context (`ctx.response` or `ctx.error`, `ctx.attempts`). It
is awaited before the client receives the terminal event or the body, so what a hook records
(stored response, ledger entry, budget charge, metrics) is in place when the client sees the end.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.pipeline.context import RequestContext

log = logging.getLogger("sluice")

Event = dict[str, Any]
Batches = AsyncIterator[list[Event]]
Hook = Callable[["RequestContext"], Awaitable[None]]


class Stage:
    """Pass-through by default; subclasses override the methods they need."""

    name = "stage"

    async def request(self, ctx: RequestContext) -> None:
        """Before routing: may replace `ctx.request` (`ctx.request.replace(...)`) or refuse it."""

    async def result(self, ctx: RequestContext, result: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming answer's result part (`status`, `output`, `usage`, ...)."""
        return result

    def events(self, ctx: RequestContext, batches: Batches) -> Batches:
        """A stream's canonical event batches, one list per upstream read, terminal event included."""
        return batches


async def run_hooks(hooks: Sequence[Hook], ctx: RequestContext) -> None:
    """Run every hook; one that fails is logged and does not keep the others or the client waiting."""
    for hook in hooks:
        try:
            await hook(ctx)
        except Exception:
            log.exception("end-of-response hook %s failed for %s", getattr(hook, "__name__", hook), ctx.response_id)
