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
from llmpool.testing import MockLLMServer

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


# --------------------------------------------------------------------------- responses


def test_chat_with_no_choices_raises_invalid_response() -> None:
    """A 200 chat body with ``choices: []`` raises InvalidResponse with the request id."""
    body = b'{"id": "c1", "model": "m", "choices": []}'
    with Answering(body, headers="x-request-id: req-empty\r\n") as server:
        with llmpool.Client(server.url, api_key=KEY) as client:
            with pytest.raises(exc.InvalidResponse) as info:
                client.chat("m", HI)
    assert info.value.request_id == "req-empty"
    assert "choices" in info.value.body


def test_embeddings_with_duplicate_indexes_raise_invalid_response() -> None:
    """Embeddings whose indexes repeat raise InvalidResponse instead of misordered vectors."""
    data = [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}]
    with Answering(json.dumps({"data": data, "model": "e"}).encode()) as server:
        with llmpool.Client(server.url, api_key=KEY) as client:
            with pytest.raises(exc.InvalidResponse, match="duplicate"):
                client.embed("e", ["a", "b"])


def test_embeddings_with_fewer_vectors_than_inputs_raise_invalid_response() -> None:
    """Fewer vectors than inputs raise InvalidResponse instead of a short result."""
    data = [{"index": 0, "embedding": [1.0]}]
    with Answering(json.dumps({"data": data, "model": "e"}).encode()) as server:
        with llmpool.Client(server.url, api_key=KEY) as client:
            with pytest.raises(exc.InvalidResponse, match="1 vectors for 2 input"):
                client.embed("e", ["a", "b"])


@pytest.mark.parametrize("status", ["500 Internal Server Error", "200 OK"])
def test_a_huge_request_id_is_capped(status: str) -> None:
    """A 10,000-character x-request-id is kept to MAX_REQUEST_ID_CHARS, on errors and results."""
    header = "x-request-id: " + "r" * 10_000 + "\r\n"
    with Answering(CHAT, status=status, headers=header) as server:
        retry = llmpool.RetryPolicy(max_attempts=1)
        with llmpool.Client(server.url, api_key=KEY, retry=retry) as client:
            try:
                request_id = client.chat("m", HI).request_id
            except exc.InternalServerError as err:
                request_id = err.request_id
    assert request_id == "r" * exc.MAX_REQUEST_ID_CHARS


@pytest.mark.parametrize("status", ["999 Odd", "600 Beyond", "302 Found"])
def test_statuses_outside_5xx_are_generic_and_not_retried(status: str) -> None:
    """A final status outside 2xx/4xx/5xx is a plain APIStatusError, sent once, not retried."""
    with Answering(b'{"error": "odd"}', status=status) as server:
        with llmpool.Client(server.url, api_key=KEY, sleep=lambda s: None) as client:
            with pytest.raises(exc.APIStatusError) as info:
                client.chat("m", HI)
    assert type(info.value) is exc.APIStatusError
    assert info.value.status_code == int(status.split(maxsplit=1)[0])
    assert not info.value.retryable
    assert server.seen == 1


# --------------------------------------------------------------------------- plugins


class ExitingObserver(llmpool.LLMPlugin):
    name = "exiting-observer"

    def before_request(self, ctx: Any, request: Any) -> None:
        raise SystemExit(2)

    def after_response(self, ctx: Any, request: Any, response: Any) -> None:
        raise SystemExit(2)


class ExitingPolicy(llmpool.LLMPlugin):
    name = "exiting-policy"
    critical = True

    def before_request(self, ctx: Any, request: Any) -> None:
        raise SystemExit("policy")


def test_system_exit_in_a_non_critical_hook_does_not_fail_the_call(
    mock_server: MockLLMServer,
) -> None:
    """A non-critical plugin calling sys.exit() is isolated; the call returns its result."""
    with llmpool.Client(mock_server.base_url, plugins=[ExitingObserver()]) as client:
        assert client.chat("m", HI).text
        stats = client.stats()["plugins"]["plugins"]["exiting-observer"]
    assert stats["failures"] == 2
    assert mock_server.request_count == 1


def test_system_exit_in_a_critical_hook_is_a_plugin_error(mock_server: MockLLMServer) -> None:
    """A critical plugin's SystemExit fails the call as PluginError; nothing is sent."""
    with llmpool.Client(mock_server.base_url, plugins=[ExitingPolicy()]) as client:
        with pytest.raises(exc.PluginError) as info:
            client.chat("m", HI)
    assert info.value.plugin == "exiting-policy"
    assert isinstance(info.value.__cause__, SystemExit)
    assert mock_server.request_count == 0
