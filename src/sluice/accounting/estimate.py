"""Token counts estimated from text, for when a provider could not report its own.

A stream that breaks after content was billed by the provider for what it generated, but the
usage it would have reported comes at the end. The estimate — one token per four characters, the
usual rule of thumb for English text with BPE tokenizers — keeps such a response from claiming it
cost nothing. It is used only where no real count exists, and documented as an estimate.
"""

from __future__ import annotations

from typing import Any

from sluice.canonical.request import CanonicalRequest
from sluice.canonical.texts import map_texts

_CHARS_PER_TOKEN = 4


def tokens_for(characters: int) -> int:
    return -(-characters // _CHARS_PER_TOKEN)  # rounded up: any text is at least one token


def estimate_usage(request: CanonicalRequest, output: list[dict[str, Any]]) -> dict[str, Any]:
    """Usage for `request` and the `output` produced so far, estimated from their text."""
    seen = 0

    def count(text: str) -> str:
        nonlocal seen
        seen += len(text)
        return text

    map_texts(request, count)
    produced = sum(len(text) for item in output for text in _texts(item))
    input_tokens, output_tokens = tokens_for(seen), tokens_for(produced)
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens}


def _texts(item: dict[str, Any]) -> list[str]:
    found = [item[key] for key in ("arguments", "input") if isinstance(item.get(key), str)]
    for key in ("content", "summary"):
        for part in item.get(key) or ():
            if isinstance(part, dict):
                found += [part[k] for k in ("text", "refusal") if isinstance(part.get(k), str)]
    return found
