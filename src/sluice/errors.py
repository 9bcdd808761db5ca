"""Errors that reach the client, always in OpenAI's shape.

Every failure the gateway reports is a `GatewayError`: it knows its HTTP status and renders
`{"error": {"message", "type", "param", "code"}}`, the body every OpenAI SDK parses.
"""

from __future__ import annotations

from typing import Any

import msgspec


class GatewayError(Exception):
    """An error with an HTTP status and an OpenAI-style body."""

    status: int = 500
    type: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def encode(self) -> bytes:
        return msgspec.json.encode(self.body())


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_request_error"

    def __init__(self, message: str = "Invalid or missing API key.", **kw: Any) -> None:
        super().__init__(message, code=kw.pop("code", "invalid_api_key"), **kw)


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"


class ServiceUnavailable(GatewayError):
    """A dependency of the gateway (e.g. the key store) cannot answer right now: 503 with `Retry-After`.

    Clients and SDKs retry a 503 after `Retry-After` seconds; the request itself was fine.
    """

    status = 503
    type = "server_error"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: Any) -> None:
        headers = {"retry-after": str(max(1, retry_after)), **(kw.pop("headers", None) or {})}
        super().__init__(message, headers=headers, **kw)


class UpstreamError(GatewayError):
    """A provider answered with an error, or could not be reached.

    `retryable` tells routing whether another attempt (same or other route) may succeed:
    rate limits, overload, 5xx and transport failures are; bad requests and auth failures are not.
    """

    type = "upstream_error"

    def __init__(self, message: str, *, provider: str, retryable: bool, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.provider = provider
        self.retryable = retryable


class NoRouteSucceeded(GatewayError):
    """Every candidate route failed: 424, carrying the last upstream error's message."""

    status = 424
    type = "upstream_error"


def status_error_type(status: int) -> str:
    """OpenAI's error `type` for an HTTP status, for upstreams that don't send one."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if 400 <= status < 500:
        return "invalid_request_error"
    return "server_error"
