"""Errors that reach the client, always in OpenAI's shape.

Every failure the gateway reports is a `GatewayError`: it knows its HTTP status and renders
`{"error": {"message", "type", "param", "code"}}`, the body every OpenAI SDK parses.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import msgspec

# Statuses that say the request itself is wrong: another route would refuse it too.
CLIENT_FAULT = frozenset({400, 413, 422})
# Statuses worth retrying on the same route after a pause.
RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


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

    `retryable` tells routing whether the same route may succeed if asked again (rate limits,
    overload, 5xx and transport failures are; bad requests and auth failures are not);
    `retry_after` is how long the provider asked to wait, in seconds, when it said so.
    """

    type = "upstream_error"

    def __init__(self, message: str, *, provider: str, retryable: bool, retry_after: float | None = None,
                 **kw: Any) -> None:
        super().__init__(message, **kw)
        self.provider = provider
        self.retryable = retryable
        if retry_after is None and "retry-after" in self.headers:
            retry_after = parse_retry_after(self.headers["retry-after"])
        self.retry_after = retry_after


def parse_retry_after(value: str) -> float | None:
    """A `Retry-After` header (seconds, or an HTTP date) as seconds from now."""
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


# In-stream error codes (a Responses `error` event carries a code, not a status) -> HTTP status.
_CODE_STATUS = {
    "rate_limit_exceeded": 429, "insufficient_quota": 429, "rate_limit_error": 429,
    "context_length_exceeded": 400, "invalid_prompt": 400, "invalid_request_error": 400, "invalid_value": 400,
    "invalid_image": 400, "invalid_image_format": 400, "invalid_base64_image": 400, "invalid_image_url": 400,
    "image_too_large": 400, "image_too_small": 400, "empty_image_file": 400, "unsupported_image_media_type": 400,
    "authentication_error": 401, "invalid_api_key": 401, "permission_error": 403, "not_found_error": 404,
    "model_not_found": 404, "overloaded": 503, "overloaded_error": 503, "server_error": 500,
    "timeout": 504, "vector_store_timeout": 504,
}


def status_for_code(code: str | None) -> int:
    """The HTTP status an upstream would have sent for an error it reported inside a stream."""
    return _CODE_STATUS.get(code or "", 502)


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
