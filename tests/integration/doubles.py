"""Small test doubles shared by the integration tests: a recording sleep and
a loopback port that refuses connections."""

from __future__ import annotations

import socket


class FakeSleep:
    """An injected sleep that records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def refused_port() -> int:
    """A loopback port nothing listens on: bound to learn it, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refused_url() -> str:
    """A base URL whose port refuses connections."""
    return f"http://127.0.0.1:{refused_port()}/v1"
