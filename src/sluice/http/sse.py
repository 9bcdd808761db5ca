"""The Responses API's SSE encoding of canonical events: numbering and framing.

The pipeline yields canonical events without `sequence_number`; this surface numbers everything
it sends, from 0 without gaps, and frames each event as `event: <type>` + `data: <json>`.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.encode
# The in-progress Response is the same object in `response.created` and `response.in_progress`.
_LIFECYCLE = frozenset({"response.created", "response.in_progress", "response.queued"})


class ResponsesEventEncoder:
    """Encodes one stream's batches; one instance per stream (it holds the sequence number)."""

    __slots__ = ("_envelope", "_envelope_json", "_sequence")

    def __init__(self) -> None:
        self._sequence = 0
        self._envelope: Any = None
        self._envelope_json = b""

    def encode(self, batch: list[dict[str, Any]]) -> bytes:
        """One write's worth of SSE bytes for a batch of events (numbered in place: they are spent)."""
        out = []
        sequence = self._sequence
        for event in batch:
            kind: str = event["type"]
            name = kind.encode()
            if kind in _LIFECYCLE:
                response = event["response"]
                if response is not self._envelope:
                    self._envelope, self._envelope_json = response, _encode(response)
                data = b'{"type":"' + name + b'","response":' + self._envelope_json + b',"sequence_number":' \
                    + str(sequence).encode() + b"}"
            else:
                event["sequence_number"] = sequence
                data = _encode(event)
            sequence += 1
            out.append(b"event: " + name + b"\ndata: " + data + b"\n\n")
        self._sequence = sequence
        return b"".join(out)
