"""A request's head and a small body leave in one send (the same bytes)."""

from __future__ import annotations

from typing import Any

import pytest

from llmpool.pool import connections
from llmpool.pool.connections import TrackedHTTPConnection


class FakeSocket:
    """Records what the connection sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: Any) -> None:
        self.sent.append(bytes(data))

    def settimeout(self, value: Any) -> None:
        pass


def _sends(body: Any, **kwargs: Any) -> list[bytes]:
    conn = TrackedHTTPConnection("example.invalid", 80)
    sock = FakeSocket()
    conn.sock = sock  # type: ignore[assignment]
    conn.request("POST", "/v1/x", body=body, headers={"Content-Type": "application/json"}, **kwargs)
    return sock.sent


def test_small_body_goes_with_the_head_in_one_send() -> None:
    sent = _sends(b'{"a":1}')
    assert len(sent) == 1
    head, _, body = sent[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/x HTTP/1.1\r\n")
    assert b"Content-Length: 7" in head
    assert body == b'{"a":1}'


def test_large_body_and_no_body_are_sent_as_http_client_sends_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connections, "_JOIN_HEAD_MAX", 4)
    sent = _sends(b'{"a":1}')
    assert len(sent) == 2 and sent[1] == b'{"a":1}'
    assert sent[0].endswith(b"\r\n\r\n")
    sent = _sends(None)
    assert len(sent) == 1 and sent[0].endswith(b"\r\n\r\n")


def test_joined_send_has_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    joined = _sends(b"x" * 100)
    monkeypatch.setattr(connections, "_JOIN_HEAD_MAX", 0)
    apart = _sends(b"x" * 100)
    assert b"".join(joined) == b"".join(apart)
    assert len(apart) == 2


def test_chunked_body_keeps_its_framing() -> None:
    sent = _sends(b"abc", chunked=True)
    wire = b"".join(sent)
    assert wire.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in wire
