"""A replay server that picks each answer from the request itself, instead of a FIFO queue.

`ScriptedUpstream(script)` calls `script(request)` for every request it receives and replays the
`Exchange` it returns (None: the usual 500 "replay queue empty"). Tests whose client sends a run of
requests the test does not drive one by one (e.g. `sluice conformance`) script the answers this
way, keyed on what each request asks for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .recordings import Exchange
from .server import ReceivedRequest, ReplayServer

Script = Callable[[ReceivedRequest], Exchange | None]


class ScriptedUpstream(ReplayServer):
    def __init__(self, script: Script, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.script = script
        self._pick = threading.Lock()  # script + hand-out as one step, whatever the concurrency

    def _take(self, request: ReceivedRequest):  # type: ignore[no-untyped-def]
        with self._pick:
            exchange = self.script(request)
            if exchange is not None:
                self.enqueue(exchange)
            return super()._take(request)
