"""The route table: which handler serves a method and path, and whether it needs a caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sluice.errors import GatewayError, NotFound
from sluice.http.asgi import Receive, Scope, Send
from sluice.state.keys import Principal


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"


@dataclass(slots=True)
class Call:
    """One HTTP request as a handler sees it: the ASGI triple, the caller, and the path's tail."""

    scope: Scope
    receive: Receive
    send: Send
    caller: Principal
    tail: str = ""  # what follows a prefix route's path (`/v1/models/{tail}`)


Handler = Callable[[Call], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    handler: Handler
    authenticated: bool


class RouteTable:
    """Exact paths first, then prefixes (`/v1/models/` + id); a trailing slash is ignored."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Endpoint]] = {}
        self._prefixes: list[tuple[str, dict[str, Endpoint]]] = []

    def add(self, method: str, path: str, handler: Handler, *, authenticated: bool = True) -> None:
        """Register `handler`; a path ending in `/` is a prefix whose remainder becomes `Call.tail`."""
        endpoint = Endpoint(handler, authenticated)
        if path.endswith("/"):
            for prefix, methods in self._prefixes:
                if prefix == path:
                    methods[method] = endpoint
                    return
            self._prefixes.append((path, {method: endpoint}))
        else:
            self._exact.setdefault(path, {})[method] = endpoint

    def match(self, method: str, path: str) -> tuple[Endpoint, str]:
        """The endpoint and the path's tail; `NotFound` / `MethodNotAllowed` otherwise."""
        path = path.rstrip("/") or "/"
        methods = self._exact.get(path)
        tail = ""
        if methods is None:
            for prefix, candidates in self._prefixes:
                if path.startswith(prefix):
                    methods, tail = candidates, path[len(prefix):]
                    break
            else:
                raise NotFound(f"Unknown request URL: {method} {path}.", code="unknown_url")
        endpoint = methods.get(method)
        if endpoint is None:
            allowed = ", ".join(sorted(methods))
            raise MethodNotAllowed(f"Method {method} is not allowed here; use {allowed}.", code="method_not_allowed",
                                   headers={"allow": allowed})
        return endpoint, tail
