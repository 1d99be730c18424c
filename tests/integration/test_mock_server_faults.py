"""Every MockLLMServer fault, seen from a raw socket or urllib3 on loopback."""

from __future__ import annotations

import email.utils
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from llmpool.testing import FAULT_HEADER, Fault, MockLLMServer

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
MESSAGES = {"model": "c", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}
# (path, payload, events before the first delta, events after the last delta)
STREAM_SHAPES = [
    pytest.param("/v1/chat/completions", {**CHAT, "stream": True}, 1, 2, id="openai"),
    pytest.param("/v1/messages", {**MESSAGES, "stream": True}, 3, 3, id="anthropic"),
]
WORDS = 5  # words in the default reply


# --------------------------------------------------------------------------- raw HTTP helpers


@pytest.fixture
def connect(mock_server: MockLLMServer) -> Iterator[Any]:
    """Open raw client sockets to the server; all closed after the test."""
    socks: list[socket.socket] = []

    def open_socket() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", mock_server.port), timeout=5.0)
        socks.append(sock)
        return sock

    yield open_socket
    for sock in socks:
        sock.close()


def send(sock: socket.socket, path: str, payload: Any, **headers: str) -> None:
    body = json.dumps(payload).encode()
    lines = [f"POST {path} HTTP/1.1", "Host: mock", f"Content-Length: {len(body)}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def split(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def dechunk(body: bytes) -> tuple[bytes, bool, bytes]:
    """(payload, whether the terminator came, bytes after the terminator)."""
    out = b""
    while body:
        size_line, sep, rest = body.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if size == 0:
            return out, True, rest[2:]
        out += rest[:size]
        body = rest[size + 2 :]
    return out, False, b""


def events_of(payload: bytes) -> list[tuple[str | None, str]]:
    events = []
    for block in payload.decode().split("\n\n"):
        if block.strip():
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            events.append((fields.get("event"), fields["data"]))
    return events


def read_one_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one Content-Length response from a keep-alive socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    status, headers, body = split(data)
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return status, headers, body


def pool(server: MockLLMServer, **kwargs: Any) -> urllib3.HTTPConnectionPool:
    return urllib3.HTTPConnectionPool(
        "127.0.0.1", server.port, maxsize=1, retries=False, timeout=5.0, **kwargs
    )


# --------------------------------------------------------------------------- status faults

STATUSES = [400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503, 504, 529]


@pytest.mark.parametrize("code", STATUSES)
def test_status_fault_has_provider_shaped_bodies(mock_server: MockLLMServer, code: int) -> None:
    """A status fault answers that status with OpenAI's or Anthropic's error body."""
    http = pool(mock_server)
    mock_server.inject(Fault.status(code), count=2)
    openai = http.request("POST", "/v1/chat/completions", body=json.dumps(CHAT))
    assert openai.status == code
    assert set(openai.json()["error"]) == {"message", "type", "param", "code"}
    assert openai.headers["x-request-id"]
    anthropic = http.request("POST", "/v1/messages", body=json.dumps(MESSAGES))
    assert anthropic.status == code
    body = anthropic.json()
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert anthropic.headers["request-id"]
    if code == 529:
        assert body["error"]["type"] == "overloaded_error"
    if code == 429:
        assert body["error"]["type"] == "rate_limit_error"
        assert openai.json()["error"]["code"] == "rate_limit_exceeded"
    assert mock_server.connections_opened == 1
    http.close()


def test_429_retry_after_headers(mock_server: MockLLMServer) -> None:
    """retry_after and retry_after_ms become Retry-After and retry-after-ms headers."""
    http = pool(mock_server)
    mock_server.inject(Fault.status(429, retry_after=2, retry_after_ms=1500, message="slow down"))
    mock_server.inject("status=429,retry_after=0.25")
    first = http.request("POST", "/v1/chat/completions", body=json.dumps(CHAT))
    assert (first.headers["retry-after"], first.headers["retry-after-ms"]) == ("2", "1500")
    assert first.json()["error"]["message"] == "slow down"
    second = http.request("POST", "/v1/chat/completions", body=json.dumps(CHAT))
    assert second.headers["retry-after"] == "0.25"
    assert "retry-after-ms" not in second.headers
    http.close()


def test_429_retry_after_as_http_date(mock_server: MockLLMServer) -> None:
    """http_date writes Retry-After as an IMF date about retry_after seconds ahead."""
    http = pool(mock_server)
    mock_server.inject(Fault.status(429, retry_after=30, http_date=True))
    before = time.time()
    r = http.request("POST", "/v1/chat/completions", body=json.dumps(CHAT))
    when = email.utils.parsedate_to_datetime(r.headers["retry-after"]).timestamp()
    assert r.headers["retry-after"].endswith("GMT")
    assert before + 28 <= when <= time.time() + 31
    http.close()


# --------------------------------------------------------------------------- timing faults


def test_delay_fault_holds_the_headers_then_answers(mock_server: MockLLMServer) -> None:
    """A delay fault keeps the client waiting for headers; a short one then answers normally."""
    http = pool(mock_server)
    mock_server.inject(Fault.delay(30))
    with pytest.raises(ReadTimeoutError):
        http.request("POST", "/v1/chat/completions", body=json.dumps(CHAT), timeout=0.1)
    mock_server.inject("delay=0.01")
    assert http.request("POST", "/v1/chat/completions", body=json.dumps(CHAT)).status == 200
    http.close()


def test_latency_setting_delays_every_response(mock_server: MockLLMServer) -> None:
    """The latency setting delays the headers of every response."""
    http = pool(mock_server)
    mock_server.configure(latency=30)
    with pytest.raises(ReadTimeoutError):
        http.request("GET", "/v1/models", timeout=0.1)
    http.close()


def test_chunk_latency_paces_the_stream(mock_server: MockLLMServer, connect: Any) -> None:
    """With chunk_latency the headers come first and the events wait."""
    mock_server.configure(chunk_latency=30)
    sock = connect()
    send(sock, "/v1/chat/completions", {**CHAT, "stream": True})
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 200")
    sock.settimeout(0.1)
    with pytest.raises(TimeoutError):
        sock.recv(65536)


# --------------------------------------------------------------------------- connection faults


def test_reset_fault_resets_before_any_byte(mock_server: MockLLMServer, connect: Any) -> None:
    """reset: the client's read fails with ECONNRESET and no response byte came."""
    mock_server.inject(Fault.reset())
    sock = connect()
    send(sock, "/v1/chat/completions", CHAT)
    with pytest.raises(ConnectionResetError):
        sock.recv(65536)
    assert mock_server.requests[0].fault == Fault.reset()


def test_reset_fault_through_urllib3(mock_server: MockLLMServer) -> None:
    """Through urllib3 a reset is a ProtocolError caused by ConnectionResetError."""
    http = pool(mock_server)
    mock_server.inject("reset")
    with pytest.raises(ProtocolError) as caught:
        http.request("POST", "/v1/chat/completions", body=json.dumps(CHAT))
    assert isinstance(caught.value.args[1], ConnectionResetError)
    http.close()


def test_drop_fault_closes_without_a_byte(mock_server: MockLLMServer, connect: Any) -> None:
    """drop: the server reads the request and closes cleanly, sending nothing."""
    mock_server.inject(Fault.drop())
    sock = connect()
    send(sock, "/v1/chat/completions", CHAT)
    assert read_to_eof(sock) == b""


@pytest.mark.parametrize("stream", [False, True])
def test_close_after_headers(mock_server: MockLLMServer, connect: Any, stream: bool) -> None:
    """close_after_headers: complete headers promising a body, then EOF."""
    mock_server.inject(Fault.close_after_headers())
    sock = connect()
    send(sock, "/v1/chat/completions", {**CHAT, "stream": stream})
    status, headers, body = split(read_to_eof(sock))
    assert status == 200
    assert body == b""
    if stream:
        assert headers["transfer-encoding"] == "chunked"
    else:
        assert int(headers["content-length"]) > 0


def test_close_after_response(mock_server: MockLLMServer, connect: Any) -> None:
    """close_after_response: a full response without Connection: close, then EOF."""
    mock_server.inject("close_after_response")
    sock = connect()
    send(sock, "/v1/chat/completions", CHAT)
    status, headers, body = split(read_to_eof(sock))
    assert status == 200
    assert "connection" not in headers
    assert len(body) == int(headers["content-length"])
    assert json.loads(body)["object"] == "chat.completion"


# --------------------------------------------------------------------------- stream faults


@pytest.mark.parametrize(("path", "payload", "preamble", "ending"), STREAM_SHAPES)
def test_stream_disconnect_after_n_chunks(
    mock_server: MockLLMServer, connect: Any, path: str, payload: Any, preamble: int, ending: int
) -> None:
    """disconnect=2: the preamble and two deltas, then EOF without the chunked terminator."""
    mock_server.inject(Fault.stream_disconnect(after_chunks=2))
    sock = connect()
    send(sock, path, payload)
    status, _, body = split(read_to_eof(sock))
    events, complete, _ = dechunk(body)
    assert status == 200
    assert not complete
    assert len(events_of(events)) == preamble + 2


def test_disconnect_on_json_sends_half_the_body(mock_server: MockLLMServer, connect: Any) -> None:
    """disconnect on a JSON answer: the headers promise more than the half body that comes."""
    mock_server.inject("disconnect")
    sock = connect()
    send(sock, "/v1/chat/completions", CHAT)
    _, headers, body = split(read_to_eof(sock))
    assert 0 < len(body) < int(headers["content-length"])


@pytest.mark.parametrize(("path", "payload", "preamble", "ending"), STREAM_SHAPES)
def test_stream_truncate_ends_cleanly_without_finish(
    mock_server: MockLLMServer, connect: Any, path: str, payload: Any, preamble: int, ending: int
) -> None:
    """truncate=2: a proper chunked end after two deltas, no finish marker, connection reusable."""
    mock_server.inject(Fault.stream_truncate(after_chunks=2))
    sock = connect()
    send(sock, path, payload)
    data = b""
    while b"0\r\n\r\n" not in data:
        data += sock.recv(65536)
    _, _, body = split(data)
    payload_bytes, complete, rest = dechunk(body)
    assert complete
    assert rest == b""
    events = events_of(payload_bytes)
    assert len(events) == preamble + 2
    assert "[DONE]" not in payload_bytes.decode()
    assert "message_stop" not in payload_bytes.decode()
    assert '"finish_reason": "stop"' not in payload_bytes.decode()
    send(sock, "/v1/models", {})  # the connection still serves (GET-less POST: 405)
    status, _, _ = read_one_response(sock)
    assert status == 405
    assert [r.connection_id for r in mock_server.requests] == [1, 1]


def test_truncate_on_json_clears_the_finish_reason(mock_server: MockLLMServer) -> None:
    """truncate on a JSON answer: finish_reason / stop_reason are null."""
    http = pool(mock_server)
    mock_server.inject("truncate", count=2)
    chat = http.request("POST", "/v1/chat/completions", body=json.dumps(CHAT)).json()
    assert chat["choices"][0]["finish_reason"] is None
    message = http.request("POST", "/v1/messages", body=json.dumps(MESSAGES)).json()
    assert message["stop_reason"] is None
    http.close()


@pytest.mark.parametrize(("path", "payload", "preamble", "ending"), STREAM_SHAPES)
def test_malformed_chunk_is_one_bad_data_line(
    mock_server: MockLLMServer, path: str, payload: Any, preamble: int, ending: int
) -> None:
    """malformed=1: exactly one data line is not JSON, right after the first delta."""
    http = pool(mock_server)
    mock_server.inject(Fault.malformed_chunk(after_chunks=1))
    r = http.request("POST", path, body=json.dumps(payload))
    bad = []
    events = events_of(r.data)
    for index, (_, data) in enumerate(events):
        if data == "[DONE]":
            continue
        try:
            json.loads(data)
        except ValueError:
            bad.append(index)
    assert bad == [preamble + 1]
    assert len(events) == preamble + WORDS + 1 + ending  # the stream goes on to its end
    assert events[-1][1] == "[DONE]" or events[-1][0] == "message_stop"
    http.close()


def test_malformed_on_json_is_a_complete_non_json_body(mock_server: MockLLMServer) -> None:
    """malformed on a JSON answer: a complete HTTP message whose body does not parse."""
    http = pool(mock_server)
    mock_server.inject("malformed")
    r = http.request("POST", "/v1/chat/completions", body=json.dumps(CHAT))
    assert r.status == 200
    assert len(r.data) == int(r.headers["content-length"])
    with pytest.raises(ValueError):
        json.loads(r.data)
    http.close()


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize(("path", "payload", "preamble", "ending"), STREAM_SHAPES)
def test_stall_sends_n_chunks_then_silence_until_client_leaves(
    mock_server: MockLLMServer, connect: Any, path: str, payload: Any, preamble: int, ending: int
) -> None:
    """stall=1: the preamble and one delta arrive, then nothing; the client leaving ends it."""
    mock_server.inject(Fault.stall(after_chunks=1))
    sock = connect()
    send(sock, path, payload)
    data = sock.recv(65536)
    while len(events_of(dechunk(split(data)[2])[0])) < preamble + 1:
        data += sock.recv(65536)
    sock.settimeout(0.1)
    with pytest.raises(TimeoutError):
        sock.recv(65536)
    assert mock_server.connections_active == 1
    sock.close()
    assert wait_until(lambda: mock_server.connections_active == 0)


def test_stall_on_json_sends_headers_and_half_body(mock_server: MockLLMServer) -> None:
    """stall on a JSON answer: the read times out after the headers."""
    http = pool(mock_server)
    mock_server.inject("stall")
    r = http.request(
        "POST", "/v1/chat/completions", body=json.dumps(CHAT), preload_content=False, timeout=0.1
    )
    assert r.status == 200
    with pytest.raises(ReadTimeoutError):
        r.read()
    r.release_conn()
    http.close()


def test_openai_stream_error_event(mock_server: MockLLMServer) -> None:
    """stream_error on OpenAI: a data: {"error": ...} line after one delta, then the end."""
    http = pool(mock_server)
    mock_server.inject(Fault.stream_error(after_chunks=1))
    r = http.request("POST", "/v1/chat/completions", body=json.dumps({**CHAT, "stream": True}))
    assert r.status == 200
    events = events_of(r.data)
    assert len(events) == 3
    error = json.loads(events[-1][1])["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error"
    assert http.request("GET", "/v1/models").status == 200  # the chunked end was clean
    assert mock_server.connections_opened == 1
    http.close()


def test_anthropic_stream_error_event(mock_server: MockLLMServer) -> None:
    """stream_error on Anthropic: event: error with overloaded_error inside the 200 stream."""
    http = pool(mock_server)
    mock_server.inject("stream_error=0,message=busy, try later")
    r = http.request("POST", "/v1/messages", body=json.dumps({**MESSAGES, "stream": True}))
    events = events_of(r.data)
    assert [name for name, _ in events] == ["message_start", "content_block_start", "ping", "error"]
    assert json.loads(events[-1][1]) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "busy, try later"},
    }
    http.close()


def test_stream_error_on_json_is_a_200_error_body(mock_server: MockLLMServer) -> None:
    """stream_error on a JSON answer: status 200 whose body is the provider's error object."""
    http = pool(mock_server)
    mock_server.inject("stream_error")
    r = http.request("POST", "/v1/messages", body=json.dumps(MESSAGES))
    assert r.status == 200
    assert r.json()["error"]["type"] == "overloaded_error"
    http.close()


def test_oversized_json_and_stream(mock_server: MockLLMServer) -> None:
    """oversized=N pads the JSON body (or the first stream event) with N bytes, still valid."""
    http = pool(mock_server)
    mock_server.inject(Fault.oversized(size=200_000), count=2)
    body = http.request("POST", "/v1/chat/completions", body=json.dumps(CHAT)).json()
    assert len(body["padding"]) == 200_000
    assert body["choices"][0]["finish_reason"] == "stop"
    r = http.request("POST", "/v1/messages", body=json.dumps({**MESSAGES, "stream": True}))
    events = events_of(r.data)
    assert len(json.loads(events[0][1])["padding"]) == 200_000
    assert events[-1][0] == "message_stop"
    http.close()


# --------------------------------------------------------------------------- choosing faults


def test_header_fault_applies_once_and_leaves_the_queue(mock_server: MockLLMServer) -> None:
    """X-Mock-Fault applies to its request only; queued faults wait for the next ones."""
    http = pool(mock_server)
    mock_server.inject(Fault.status(500))
    r = http.request(
        "POST", "/v1/chat/completions", body=json.dumps(CHAT), headers={FAULT_HEADER: "status=418"}
    )
    assert r.status == 418
    assert mock_server.pending_faults == (Fault.status(500),)
    assert http.request("GET", "/v1/models").status == 500
    assert http.request("GET", "/v1/models").status == 200
    http.close()


def test_bad_header_fault_gets_a_400_naming_it(mock_server: MockLLMServer) -> None:
    """A header spec that does not parse gets a 400 whose message names the header."""
    http = pool(mock_server)
    r = http.request("GET", "/v1/models", headers={"X-Mock-Fault": "explode=3"})
    assert r.status == 400
    assert FAULT_HEADER in r.json()["error"]["message"]
    http.close()


def test_scripted_queue_is_fifo_with_counts(mock_server: MockLLMServer) -> None:
    """inject() queues faults in order, count times each, then requests are normal again."""
    http = pool(mock_server)
    mock_server.inject(Fault.status(503), count=2)
    mock_server.inject("status=429;status=500")
    statuses = [http.request("GET", "/v1/models").status for _ in range(5)]
    assert statuses == [503, 503, 429, 500, 200]
    assert [r.fault for r in mock_server.requests][:4] == [
        Fault.status(503),
        Fault.status(503),
        Fault.status(429),
        Fault.status(500),
    ]
    assert mock_server.pending_faults == ()
    http.close()


def test_clear_faults_empties_the_queue(mock_server: MockLLMServer) -> None:
    """clear_faults() drops queued faults before they are used."""
    mock_server.inject("reset", count=3)
    mock_server.clear_faults()
    http = pool(mock_server)
    assert http.request("GET", "/v1/models").status == 200
    http.close()


def _random_run(seed: int) -> list[Fault | None]:
    with MockLLMServer(fault_rate=0.5, random_faults="status=500;status=503", seed=seed) as srv:
        http = pool(srv)
        for _ in range(30):
            http.request("GET", "/v1/models")
        http.close()
        return [r.fault for r in srv.requests]


def test_random_faults_are_reproducible_with_a_seed() -> None:
    """Two servers with the same seed inject the same faults into the same request sequence."""
    first, second = _random_run(7), _random_run(7)
    assert first == second
    assert {None, Fault.status(500), Fault.status(503)} == set(first)
    assert first != _random_run(8)


def test_configure_seed_restarts_the_random_sequence(mock_server: MockLLMServer) -> None:
    """configure(seed=...) reseeds: the same requests get the same faults again."""
    http = pool(mock_server)
    runs = []
    for _ in range(2):
        mock_server.configure(fault_rate=0.3, random_faults=[Fault.status(502)], seed=3)
        runs.append([http.request("GET", "/v1/models").status for _ in range(20)])
    assert runs[0] == runs[1]
    assert 502 in runs[0]
    assert 200 in runs[0]
    http.close()
