"""What the benchmarks share: free loopback ports for their own engines, the collector's auth header."""

from __future__ import annotations

import socket

from lambdalake.settings import Settings


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def collector_headers(settings: Settings) -> dict[str, str]:
    """Headers of a JSON post to the collector with the deployment's first write key."""
    headers = {"Content-Type": "application/json"}
    if settings.write_keys:
        headers["Authorization"] = f"Bearer {settings.write_keys[0]}"
    return headers
