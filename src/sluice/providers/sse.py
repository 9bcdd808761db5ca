"""Server-sent events, read incrementally from an upstream body."""

from __future__ import annotations

import re

_SIMPLE_BLOCK = re.compile(rb"(?:event: ([^\n]+)\n)?data: ([^\n]*)\n\n")


class SSEDecoder:
    """Splits a byte stream into `(event, data)` pairs; `event` is None when the server sends none.

    Handles `\\n`, `\\r\\n` and chunk boundaries anywhere, multi-line `data:` and comment lines.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.rfind(b"\n\n") + 2
        if end < 2:
            self._buffer = buffer
            return []
        self._buffer = buffer[end:]
        # Fast path, one regex pass: every block is `[event: NAME\n]data: DATA\n\n`, which is what
        # providers send. The matched sizes must add up to the whole text, else some block has
        # another shape (comments, multi-line data, ids) and the general parser takes over.
        events: list[tuple[str | None, bytes]] = []
        size = 0
        for name, data in _SIMPLE_BLOCK.findall(buffer, 0, end):
            if name:
                size += len(name) + len(data) + 16
                events.append((name.decode(), data))
            else:
                size += len(data) + 8
                events.append((None, data))
        if size == end:
            return events
        events = []
        for block in buffer[:end].split(b"\n\n"):
            parsed = _parse_block(block)
            if parsed is not None:
                events.append(parsed)
        return events

    def flush(self) -> list[tuple[str | None, bytes]]:
        """What is left when the body ends without a final blank line."""
        block, self._buffer = self._buffer.strip(b"\r\n"), b""
        parsed = _parse_block(block) if block else None
        return [parsed] if parsed is not None else []


def _parse_block(block: bytes) -> tuple[str | None, bytes] | None:
    event: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode()
    if not data:
        return None
    return event, b"\n".join(data)
