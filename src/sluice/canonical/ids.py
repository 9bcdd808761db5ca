"""Identifiers in OpenAI's style: a type prefix and random hex."""

from __future__ import annotations

import os


def new_id(prefix: str) -> str:
    """`resp_…`, `msg_…`, `fc_…`, `rs_…`: 24 random bytes, hex, like OpenAI's own ids."""
    return f"{prefix}_{os.urandom(24).hex()}"
