"""Provider and model hardening (issue 10) through a real Client and loopback servers."""

from __future__ import annotations

import datetime
import json
import pickle
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from rawserver import RawServer, read_request

import llmpool
from llmpool import exceptions as exc

HI = [{"role": "user", "content": "hi"}]
KEY = "sk-hardening-secret-31415926"


CHAT = json.dumps(
    {
        "id": "c1",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
    }
).encode()


class Answering(RawServer):
    """A raw server answering every request with *body* (status *status*), counting requests."""

    def __init__(self, body: bytes = CHAT, status: str = "200 OK", headers: str = "") -> None:
        self.head = (
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.body = body
        self.seen = 0
        self.seen_lock = threading.Lock()
        super().__init__(self.answer)

    def answer(self, conn: socket.socket, _number: int) -> None:
        """Answer each request on *conn* until the peer closes."""
        while read_request(conn) is not None:
            with self.seen_lock:
                self.seen += 1
            conn.sendall(self.head + self.body)


@pytest.fixture
def raw() -> Iterator[Answering]:
    """A raw server that answers every request with a chat completion and counts them."""
    with Answering() as server:
        yield server


# --------------------------------------------------------------------------- header values


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_api_key_with_trailing_newline_fails_at_construction(raw: Answering, provider: str) -> None:
    """A key read with its newline raises ConfigError("api_key") at Client(), never showing it."""
    with pytest.raises(exc.ConfigError) as info:
        llmpool.Client(raw.url, api_key=KEY + "\n", provider=provider)
    err = info.value
    assert err.key == "api_key"
    assert not isinstance(err, exc.TransportError)
    for text in (str(err), repr(err), repr(pickle.dumps(err))):
        assert KEY not in text
    assert raw.connections == 0


def test_header_injection_through_default_headers_is_refused(raw: Answering) -> None:
    """CR/LF in default_headers (Client() or with_options) raises ConfigError; nothing is sent."""
    bad = {"X-Trace": "a\r\nX-Injected: 1"}
    with pytest.raises(exc.ConfigError) as info:
        llmpool.Client(raw.url, api_key=KEY, default_headers=bad)
    assert info.value.key == "default_headers"
    with llmpool.Client(raw.url, api_key=KEY) as client:
        with pytest.raises(exc.ConfigError) as info:
            client.with_options(default_headers=bad)
    assert info.value.key == "default_headers"
    assert raw.seen == 0


# --------------------------------------------------------------------------- request bodies


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    "extra",
    [
        {"when": datetime.datetime.now()},
        {"x": {1, 2}},
        {"t": float("nan")},
        {"t": float("inf")},
        {"blob": b"raw"},
    ],
    ids=["datetime", "set", "nan", "inf", "bytes"],
)
def test_extra_body_that_is_not_json_fails_before_sending(
    raw: Answering, provider: str, extra: dict[str, Any]
) -> None:
    """extra_body that JSON cannot encode (or NaN/inf) raises ConfigError("extra_body"), unsent."""
    with llmpool.Client(raw.url, api_key=KEY, provider=provider) as client:
        with pytest.raises(exc.ConfigError) as info:
            client.chat("m", HI, extra_body=extra)
    assert info.value.key == "extra_body"
    assert raw.seen == 0


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_bytes_message_content_fails_before_sending(raw: Answering, provider: str) -> None:
    """Bytes message content raises ConfigError("messages") naming the type, unsent."""
    messages = [{"role": "user", "content": b"secret-bytes-content"}]
    with llmpool.Client(raw.url, api_key=KEY, provider=provider) as client:
        with pytest.raises(exc.ConfigError) as info:
            client.chat("m", messages)
    assert info.value.key == "messages"
    assert "bytes" in str(info.value) and "secret-bytes-content" not in str(info.value)
    assert raw.seen == 0


def test_nan_temperature_fails_before_sending(raw: Answering) -> None:
    """A NaN argument is never sent as the invalid JSON literal NaN: ConfigError, unsent."""
    with llmpool.Client(raw.url, api_key=KEY) as client:
        with pytest.raises(exc.ConfigError) as info:
            client.chat("m", HI, temperature=float("nan"))
        assert client.chat("m", HI, extra_body={"ok": [1.5, "x", None]}) is not None
    assert info.value.key == "temperature"
    assert raw.seen == 1
