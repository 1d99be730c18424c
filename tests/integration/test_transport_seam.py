"""The transport seam: the client sends through any Transport, not only its own pool."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import llmpool
from llmpool.pool.interfaces import HTTPResponse, Transport
from llmpool.testing import MockLLMServer

HI = [{"role": "user", "content": "hi"}]


class RecordingTransport:
    """A user's transport: records every request, then sends it through a real pool."""

    def __init__(self, inner: llmpool.ConnectionPool) -> None:
        self.inner = inner
        self.sent: list[tuple[str, str, dict[str, str], float | None]] = []

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        stream: bool = False,
        pool_timeout: float | None = None,
        deadline: float | None = None,
    ) -> HTTPResponse:
        self.sent.append((method, url, dict(headers or {}), deadline))
        return self.inner.request(
            method,
            url,
            body=body,
            headers=headers,
            timeout=timeout,
            stream=stream,
            pool_timeout=pool_timeout,
            deadline=deadline,
        )

    def get_stats(self) -> dict[str, Any]:
        return {"requests": len(self.sent), **self.inner.get_stats()}

    def close_idle(self) -> int:
        return self.inner.close_idle()

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def recording() -> Iterator[RecordingTransport]:
    with llmpool.ConnectionPool() as pool:
        yield RecordingTransport(pool)


def test_a_users_transport_carries_json_calls_and_streams(
    mock_server: MockLLMServer, recording: RecordingTransport
) -> None:
    """Client(pool=<any Transport>) sends chats and streams through it, deadline included."""
    assert isinstance(recording, Transport)
    with llmpool.Client(mock_server.base_url, api_key="k", pool=recording, deadline=30.0) as c:
        assert c.chat("m", HI).text
        with c.chat("m", HI, stream=True) as stream:
            assert "".join(chunk.delta for chunk in stream)
        assert c.stats()["pool"]["requests"] == 2
        assert c.pool is recording
    assert [m for m, *_ in recording.sent] == ["POST", "POST"]
    assert all(url.endswith("/chat/completions") for _, url, _, _ in recording.sent)
    assert all(deadline is not None for *_, deadline in recording.sent)
    assert not recording.inner.closed  # shared: the client did not close it


class CannedResponse:
    """A response object that never touched a socket."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.headers = {"content-type": "application/json", "x-request-id": "canned-1"}
        self.connection_reused = False
        self._body = body
        self.closed = False

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def read(self, max_bytes: int | None = None) -> bytes:
        self.closed = True
        return self._body

    def iter_bytes(self) -> Iterator[bytes]:
        yield self._body
        self.closed = True

    def drain(self, limit: int = 1 << 20) -> bool:
        self.closed = True
        return True

    def close(self) -> None:
        self.closed = True


class CannedTransport:
    """A transport with no network at all: the seam needs nothing of ConnectionPool."""

    def __init__(self, *answers: CannedResponse) -> None:
        self.answers = list(answers)

    def request(self, method: str, url: str, **_: Any) -> HTTPResponse:
        return self.answers.pop(0)

    def get_stats(self) -> dict[str, Any]:
        return {}

    def close_idle(self) -> int:
        return 0

    def close(self) -> None:
        pass


def test_retries_go_through_any_transport() -> None:
    """A 503 then a 200 from a transport with no sockets: retried once, parsed, request id kept."""
    answer = {
        "id": "c",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
    }
    transport = CannedTransport(
        CannedResponse(503, b'{"error": {"message": "busy"}}'),
        CannedResponse(200, json.dumps(answer).encode()),
    )
    with llmpool.Client("http://llm.invalid/v1", pool=transport, sleep=lambda _s: None) as client:
        reply = client.chat("m", HI)
        assert client.stats()["client"]["retries"] == 1
    assert reply.text == "ok" and reply.request_id == "canned-1"


def test_requests_transport_needs_a_connection_pool() -> None:
    """transport='requests' over a foreign Transport is a ConfigError, not a late failure."""
    with pytest.raises(llmpool.ConfigError) as info:
        llmpool.Client("http://llm.invalid/v1", pool=CannedTransport(), transport="requests")
    assert info.value.key == "transport"


def test_something_that_is_not_a_transport_is_refused() -> None:
    """pool=<an object without request()> is a ConfigError naming pool."""
    with pytest.raises(llmpool.ConfigError) as info:
        llmpool.Client("http://llm.invalid/v1", pool=object())  # type: ignore[arg-type]
    assert info.value.key == "pool"
