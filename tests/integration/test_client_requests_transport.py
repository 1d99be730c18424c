"""transport="requests": the same calls through a requests.Session on the shared pool."""

from __future__ import annotations

import json

import pytest
import responses

import llmpool
from llmpool import exceptions as exc
from llmpool.testing import Fault, MockLLMServer

HI = [{"role": "user", "content": "hi"}]


def test_requests_transport_against_the_mock_server(mock_server: MockLLMServer) -> None:
    """JSON and streamed calls work through requests and count in the pool's statistics."""
    with llmpool.Client(mock_server.base_url, api_key="k", transport="requests") as c:
        assert c.chat("m", HI).text == "Hello from the mock server."
        with c.chat("m", HI, stream=True) as stream:
            assert "".join(chunk.delta for chunk in stream) == "Hello from the mock server."
        mock_server.inject(Fault.status(404))
        with pytest.raises(exc.NotFoundError):
            c.chat("m", HI)
        stats = c.stats()["pool"]
    assert stats["total_requests"] == 3
    assert stats["connections_created"] == 1
    assert stats["in_use"] == 0


def test_requests_transport_maps_connection_errors() -> None:
    """A refused connection through requests is llmpool's ConnectError, not requests'."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = llmpool.RetryPolicy(max_attempts=1)
    with llmpool.Client(f"http://127.0.0.1:{port}/v1", transport="requests", retry=policy) as c:
        with pytest.raises(exc.ConnectError):
            c.chat("m", HI)


@responses.activate
def test_users_can_mock_llmpool_with_responses() -> None:
    """With transport="requests", the responses library intercepts llmpool's calls."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "mocked"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    responses.add(
        responses.POST,
        "https://api.example.test/v1/chat/completions",
        json=body,
        headers={"x-request-id": "req_mocked"},
    )
    with llmpool.Client("https://api.example.test/v1", api_key="k", transport="requests") as c:
        reply = c.chat("m", HI)
    assert reply.text == "mocked"
    assert reply.request_id == "req_mocked"
    sent = json.loads(responses.calls[0].request.body)
    assert sent["messages"] == HI
