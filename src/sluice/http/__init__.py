"""The HTTP surface: a plain ASGI application (no framework on the hot path)."""
