"""Replay recorded provider traffic from ``shared/fixtures`` through a local HTTP server."""

from .recordings import (
    PROVIDERS,
    Exchange,
    all_recordings,
    decode_eventstream,
    encode_eventstream_frame,
    error_status,
    fixtures_root,
    load,
)
from .server import ReceivedRequest, ReplayServer

__all__ = [
    "PROVIDERS",
    "Exchange",
    "ReceivedRequest",
    "ReplayServer",
    "all_recordings",
    "decode_eventstream",
    "encode_eventstream_frame",
    "error_status",
    "fixtures_root",
    "load",
]
