"""Bounds on what one request body may decode to, checked before and right after decoding.

A JSON body can cost far more memory once decoded than on the wire: `{}` is 2 bytes and a
64-byte dict, so 30 MB of them took 0.75 GB (25x), and nesting ~1,000 levels deep overflowed the
decoder's recursion. Decoding holds the GIL the whole time (msgspec never releases it), so a
worker thread would not keep the event loop free either: the only cure is to refuse such bodies
before decoding them. Every check here runs at C speed over the body's bytes (`translate`,
`count`, `replace`); the exact string-aware recount runs only when a cheap count is over a limit.

The limits come from the `server:` section of the config (`ServerConfig`); defaults and their
reasons are in docs/security.md.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from sluice.config import ServerConfig
from sluice.errors import InvalidRequest, PayloadTooLarge

DEFAULT_LIMITS = ServerConfig()

# Bodies up to this size skip the decoded-size estimate: even the worst shape (~25x) stays a few
# tens of MB, and tool-heavy requests of a few hundred KB, which legitimately decode to ~8x,
# pay nothing for a check they cannot fail.
LARGE_BODY = 1 << 20

# Decoded bytes charged per structural byte, measured with msgspec on CPython 3.11: an object
# or array costs 64 (`{}`) to ~230 bytes (a dict with a few keys), each further element (one
# comma) ~32 (a float) to ~70 bytes (a short string) including its slot. With the default
# factor of 5 the worst accepted shape measured peaks at 5.5x the body (bench/memory_limits.py).
CONTAINER_COST = 200
ELEMENT_COST = 70
# The exact recount outside strings costs ~2 ns per body byte plus ~30 ns per string: it runs
# only if strings average at least this many body bytes, so it stays near 100 ms for a 32 MiB
# body. Bodies of many short strings are dense for real and are judged on the cheap count.
RECOUNT_BYTES_PER_STRING = 32

_BRACKETS = bytes.maketrans(b"{}", b"[]")  # one kind of bracket: only depth matters
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_NOT_MARKS = bytes(c for c in range(256) if c not in b'[]{},"')
_SIGNS = bytes.maketrans(b"[]", b"\x01\xff")  # as signed bytes: +1 and -1, summed by accumulate
_FEW_QUOTES = 4096  # up to this many quotes, string lengths are summed with `find` (~1 µs each)
_WINDOW = 1 << 20  # the exact recount's slice of structural bytes: bounds its temporary pieces


def check_json_shape(body: bytes, limits: ServerConfig = DEFAULT_LIMITS) -> None:
    """Refuse a body whose JSON is nested too deeply (400) or would decode to too much (413).

    Costs one `translate` over the body (~0.4 ns/byte; 0.2 µs for a small request). A body over
    1 MiB is counted instead (no body-sized temporary), three `count`s of ~0.3 ns/byte each.
    """
    if len(body) > LARGE_BODY:
        opens = body.count(b"{") + body.count(b"[")
        _check_expansion(body, opens, limits.max_json_expansion)
        if opens > limits.max_json_depth:
            _check_depth(body, body.translate(_BRACKETS, _NOT_BRACKETS), limits.max_json_depth)
        return
    brackets = body.translate(_BRACKETS, _NOT_BRACKETS)
    # Nesting deeper than the limit needs more opening brackets than the limit.
    if len(brackets) > limits.max_json_depth:
        _check_depth(body, brackets, limits.max_json_depth)


def check_input_counts(value: Any, limits: ServerConfig = DEFAULT_LIMITS) -> None:
    """Bound the `input` items and their content parts: each costs Python work to normalize."""
    if not isinstance(value, list):
        return
    if len(value) > limits.max_input_items:
        raise InvalidRequest(f"Invalid 'input': array too long. Expected an array with maximum length "
                             f"{limits.max_input_items}, but got an array with length {len(value)} instead.",
                             param="input", code="array_above_max_length")
    budget = limits.max_content_parts
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            continue  # validation names the problem
        parts = item.get("content")
        if not isinstance(parts, list):
            parts = item.get("output")
        if isinstance(parts, list):
            budget -= len(parts)
            if budget < 0:
                raise InvalidRequest(f"Invalid 'input[{i}]': the request has more than {limits.max_content_parts} "
                                     "content parts in all its input items together.",
                                     param=f"input[{i}]", code="array_above_max_length")


def _check_expansion(body: bytes, opens: int, factor: float) -> None:
    size = len(body)
    budget = factor * size
    estimate = size + CONTAINER_COST * opens + ELEMENT_COST * body.count(b",")
    if estimate <= budget:
        return
    # Brackets and commas inside strings (code, CSV, JSON held in a string) were counted too:
    # recount outside strings, if there are strings and they are few enough to afford it.
    quotes = body.count(b'"')
    # Few strings and no escapes: their bytes are cheap to total, and if fewer than the recount
    # would need to remove, the answer is already known (30 MB of `{}`: 60 ms less).
    if quotes <= _FEW_QUOTES and b"\\" not in body and _string_bytes(body) * CONTAINER_COST < estimate - budget:
        quotes = 0
    if quotes and (quotes - body.count(b'\\"')) // 2 * RECOUNT_BYTES_PER_STRING <= size:
        opens = commas = 0
        for outside in _outside_strings(body):
            opens += outside.count(b"[")
            commas += outside.count(b",")
        if size + CONTAINER_COST * opens + ELEMENT_COST * commas <= budget:
            return
    raise PayloadTooLarge(
        f"The request's JSON has too many values for its size: decoded, it would take more than {factor:g} "
        f"times its {size} bytes. Send fewer, larger values (long text rather than many small objects).",
        code="json_too_complex")


def _check_depth(body: bytes, brackets: bytes, limit: int) -> None:
    depth = _nesting(brackets, limit, work=2 * len(body) + (1 << 20))
    if depth is None or depth > limit:
        # Undecided, or over the limit counting brackets inside strings too: count exactly.
        signs = array("b", b"".join(_outside_strings(body)).translate(_SIGNS, b","))
        depth = max(accumulate(signs), default=0)
    if depth > limit:
        raise InvalidRequest(f"The request's JSON is nested more than {limit} levels deep.", code="json_too_deep")


def _nesting(brackets: bytes, limit: int, work: int) -> int | None:
    """How deep `brackets` (only `[` and `]`) nest, at most `limit + 1`; None past `work` bytes.

    Each `replace` removes the innermost pairs, one level, at C speed: typical JSON (depth < 10)
    is done in a few short passes. Brackets inside strings may add depth, never a false "fits"
    unless they are unbalanced ones crafted for it; then leftovers that no longer shrink remain.
    A deep chain costs one pass per level over the whole sequence: past `work` bytes scanned,
    the caller's linear count is cheaper.
    """
    depth = 0
    while brackets and depth <= limit:
        work -= len(brackets)
        if work < 0:
            return None
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            break
        brackets = shorter
        depth += 1
    return depth


def _string_bytes(body: bytes) -> int:
    """Bytes between quote pairs, for a body without escapes (so every quote is a delimiter)."""
    total = 0
    end = 0
    while (start := body.find(b'"', end)) >= 0:
        end = body.find(b'"', start + 1) + 1
        if end == 0:
            break
        total += end - start - 2
    return total


def _outside_strings(body: bytes) -> Iterator[bytes]:
    """The body's structural bytes (brackets folded to `[]`, commas) outside JSON strings.

    Yielded a window at a time, so that the pieces of a body of many strings never all exist
    at once.
    """
    if b"\\" in body:
        # Escaped backslashes first, so `\\"` still ends a string; then escaped quotes.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = body.translate(_BRACKETS, _NOT_MARKS)
    inside = 0
    for start in range(0, len(marks), _WINDOW):
        # Between two quotes is a string: keep every other piece.
        pieces = marks[start : start + _WINDOW].split(b'"')
        yield b"".join(pieces[inside::2])
        inside ^= (len(pieces) - 1) & 1
