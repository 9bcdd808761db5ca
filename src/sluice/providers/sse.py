"""Server-sent events, read incrementally from an upstream body."""

from __future__ import annotations

import re

from sluice.config import DEFAULT_MAX_EVENT_BYTES
from sluice.providers.transport import ResponseTooLarge

# Below this an unfinished event is simply re-joined with the next chunk (the common, cheap case).
_JOIN_LIMIT = 64 * 1024

_SIMPLE_BLOCK = re.compile(rb"(?:event: ([^\n]+)\n)?data: ([^\n]*)\n\n")


class SSEDecoder:
    """Splits a byte stream into `(event, data)` pairs; `event` is None when the server sends none.

    Handles `\\n`, `\\r\\n` and chunk boundaries anywhere, multi-line `data:` and comment lines.
    An event still without its blank line after `max_event_bytes` raises `ResponseTooLarge`: an
    upstream that never ends its event must not grow the buffer forever.
    """

    __slots__ = ("_buffer", "_held", "_size", "_tail", "max_event_bytes")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = b""  # the start of an event whose blank line has not arrived yet
        # Past _JOIN_LIMIT that start is kept as the chunks it came in and joined once when its
        # end arrives: re-joining and re-scanning a growing buffer on every chunk is quadratic.
        self._held: list[bytes] = []
        self._size = 0
        self._tail = b""  # the held bytes' last two, for an end split across chunks ("\n" | "\r\n")

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        held = self._held
        if held:
            edge = self._tail + chunk[:2]
            # A raw "\n\n" or "\n\r\n" is the only thing that is an event's end once \r\n is \n.
            if b"\n\n" not in chunk and b"\n\r\n" not in chunk and b"\n\n" not in edge and b"\n\r\n" not in edge:
                self._size += len(chunk)
                if self._size > self.max_event_bytes:
                    raise ResponseTooLarge("one stream event", self.max_event_bytes, "max_event_bytes")
                held.append(chunk)
                self._tail = edge[-2:] if len(chunk) < 2 else chunk[-2:]
                return []
            held.append(chunk)
            buffer = b"".join(held)
            held.clear()
        elif self._buffer:
            buffer = self._buffer + chunk
        else:
            buffer = chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.rfind(b"\n\n") + 2
        if end < 2:
            self._keep(buffer)
            return []
        self._keep(buffer[end:] if end < len(buffer) else b"")
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

    def _keep(self, rest: bytes) -> None:
        """Keep what follows the last complete event, for the next chunk."""
        if len(rest) > self.max_event_bytes:
            raise ResponseTooLarge("one stream event", self.max_event_bytes, "max_event_bytes")
        if len(rest) <= _JOIN_LIMIT:
            self._buffer = rest
            return
        self._buffer = b""
        self._held.append(rest)
        self._size = len(rest)
        self._tail = rest[-2:]

    def flush(self) -> list[tuple[str | None, bytes]]:
        """What is left when the body ends without a final blank line."""
        block = (b"".join(self._held) or self._buffer).replace(b"\r\n", b"\n").strip(b"\r\n")
        self._held.clear()
        self._buffer = b""
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
