"""Opaque reasoning state that a provider needs back on the next turn.

Responses clients round-trip a reasoning item's `encrypted_content` without reading it. For
providers other than OpenAI, Sluice seals that provider's own state there (Anthropic thinking
signatures, redacted thinking, Gemini thought signatures, ...), tagged with the wire protocol so
that a conversation that moves to another provider drops state the new one could not verify.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

_PREFIX = "sluice1."


def seal(protocol: str, state: dict[str, Any]) -> str:
    """`sluice1.<protocol>.<base64url(json)>`."""
    payload = base64.urlsafe_b64encode(msgspec.json.encode(state)).decode().rstrip("=")
    return f"{_PREFIX}{protocol}.{payload}"


def unseal(value: Any, protocol: str) -> dict[str, Any] | None:
    """The state sealed by `protocol`, or None (absent, foreign, or not Sluice's)."""
    if not isinstance(value, str) or not value.startswith(_PREFIX):
        return None
    tag, _, payload = value[len(_PREFIX) :].partition(".")
    if tag != protocol:
        return None
    try:
        state = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, msgspec.DecodeError):
        return None
    return state if isinstance(state, dict) else None


def is_sealed(value: Any) -> bool:
    """True for state Sluice sealed for some provider (never OpenAI's own encrypted content)."""
    return isinstance(value, str) and value.startswith(_PREFIX)
