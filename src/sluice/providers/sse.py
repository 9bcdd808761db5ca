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
        blocks = buffer.split(b"\n\n")
        self._buffer = blocks.pop()  # the unfinished tail (b"" when the chunk ended an event)
        events: list[tuple[str | None, bytes]] = []
        append = events.append
        for block in blocks:
            # Inline fast paths for the two shapes every provider sends; anything else is parsed fully.
            if block.startswith(b"data: "):
                if b"\n" not in block:
                    append((None, block[6:]))
                    continue
            elif block.startswith(b"event: "):
                head, found, data = block.partition(b"\ndata: ")
                if found and b"\n" not in data and b"\n" not in head:
                    append((head[7:].decode(), data))
                    continue
            parsed = _parse_block(block)
            if parsed is not None:
                append(parsed)
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
