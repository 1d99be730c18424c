"""Provider and model hardening (issue 10) through a real Client and loopback servers."""

from __future__ import annotations

import pickle
import socket
from collections.abc import Iterator

import pytest
from rawserver import RawServer

import llmpool
from llmpool import exceptions as exc

HI = [{"role": "user", "content": "hi"}]
KEY = "sk-hardening-secret-31415926"


@pytest.fixture
def raw() -> Iterator[RawServer]:
    """A raw server that answers 200 to every request and counts them."""

    def behaviour(conn: socket.socket, _number: int) -> None:
        server.serve_forever_ok(conn)

    with RawServer(behaviour) as server:
        yield server


# --------------------------------------------------------------------------- header values


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_api_key_with_trailing_newline_fails_at_construction(raw: RawServer, provider: str) -> None:
    """A key read with its newline raises ConfigError("api_key") at Client(), never showing it."""
    with pytest.raises(exc.ConfigError) as info:
        llmpool.Client(raw.url, api_key=KEY + "\n", provider=provider)
    err = info.value
    assert err.key == "api_key"
    assert not isinstance(err, exc.TransportError)
    for text in (str(err), repr(err), repr(pickle.dumps(err))):
        assert KEY not in text
    assert raw.connections == 0


def test_header_injection_through_default_headers_is_refused(raw: RawServer) -> None:
    """CR/LF in default_headers (Client() or with_options) raises ConfigError; nothing is sent."""
    bad = {"X-Trace": "a\r\nX-Injected: 1"}
    with pytest.raises(exc.ConfigError) as info:
        llmpool.Client(raw.url, api_key=KEY, default_headers=bad)
    assert info.value.key == "default_headers"
    with llmpool.Client(raw.url, api_key=KEY) as client:
        with pytest.raises(exc.ConfigError) as info:
            client.with_options(default_headers=bad)
    assert info.value.key == "default_headers"
    assert raw.requests == 0
