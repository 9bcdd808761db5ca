"""Server-sent events, read incrementally from an upstream body."""

from __future__ import annotations


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
        events: list[tuple[str | None, bytes]] = []
        start = 0
        find = buffer.find
        while (end := find(b"\n\n", start)) >= 0:  # scan by index: no copy of the rest per event
            parsed = _parse_block(buffer[start:end])
            if parsed is not None:
                events.append(parsed)
            start = end + 2
        self._buffer = buffer[start:] if start else buffer
        return events

    def flush(self) -> list[tuple[str | None, bytes]]:
        """What is left when the body ends without a final blank line."""
        block, self._buffer = self._buffer.strip(b"\r\n"), b""
        parsed = _parse_block(block) if block else None
        return [parsed] if parsed is not None else []


def _parse_block(block: bytes) -> tuple[str | None, bytes] | None:
    # The common shapes first: one `data:` line, or an `event:` line and one `data:` line.
    if block.startswith(b"data: "):
        if b"\n" not in block:
            return None, block[6:]
    elif block.startswith(b"event: "):
        end = block.find(b"\ndata: ")
        if end > 0 and block.find(b"\n", end + 1) < 0 and b"\n" not in block[:end]:
            return block[7:end].decode(), block[end + 7 :]
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
