"""An ASGI app whose startup fails, for testing how `sluice serve`'s supervisor reports it."""

from __future__ import annotations

from typing import Any

MARKER = "deliberate startup failure for the test"


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": MARKER})


def create_app() -> Any:
    return _app
