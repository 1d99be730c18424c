"""MockLLMServer's connections: keep-alive, recording, server-side closes, shutdown, leaks."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import urllib3
from urllib3.exceptions import ProtocolError

from llmpool.testing import Fault, MockLLMServer

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


def pool(server: MockLLMServer, **kwargs: Any) -> urllib3.HTTPConnectionPool:
    return urllib3.HTTPConnectionPool(
        "127.0.0.1", server.port, maxsize=1, retries=False, timeout=5.0, **kwargs
    )


def chat(http: urllib3.HTTPConnectionPool, **headers: str) -> urllib3.BaseHTTPResponse:
    return http.request("POST", "/v1/chat/completions", body=json.dumps(CHAT), headers=headers)


def raw_get(sock: socket.socket, extra: str = "") -> None:
    sock.sendall(f"GET /v1/models HTTP/1.1\r\nHost: mock\r\n{extra}\r\n".encode())


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one Content-Length response; (b"", b"") on EOF before any byte."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            return data, b""
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def mock_threads(port: int) -> list[threading.Thread]:
    """The live threads of the server on *port* (names end with the port or port-id)."""
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith("llmpool-mock") and f"-{port}" in t.name
    ]


def socket_fds() -> set[str]:
    """The process's open sockets (``socket:[inode]``); other fds come and go with other code."""
    sockets = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:"):
                sockets.add(target)
    return sockets


# --------------------------------------------------------------------------- keep-alive, recording


def test_keep_alive_requests_share_one_connection(mock_server: MockLLMServer) -> None:
    """Two sequential keep-alive requests arrive on one connection, numbered 1 and 2."""
    http = pool(mock_server)
    chat(http)
    chat(http)
    records = mock_server.requests
    assert [(r.connection_id, r.index_on_connection) for r in records] == [(1, 1), (1, 2)]
    assert mock_server.connections_opened == 1
    assert records[0].timestamp <= records[1].timestamp
    http.close()


def test_connection_close_gives_two_connections(mock_server: MockLLMServer) -> None:
    """Connection: close is honoured: the server says so and closes; the next request reconnects."""
    http = pool(mock_server)
    first = chat(http, connection="close")
    assert first.headers["connection"] == "close"
    chat(http, connection="close")
    assert [r.connection_id for r in mock_server.requests] == [1, 2]
    assert mock_server.connections_opened == 2
    http.close()


def test_http10_without_keep_alive_is_closed(mock_server: MockLLMServer) -> None:
    """An HTTP/1.0 request without keep-alive gets its answer and then EOF."""
    with socket.create_connection(("127.0.0.1", mock_server.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.0\r\n\r\n")
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert json.loads(body)["object"] == "list"
        assert sock.recv(1) == b""


def test_malformed_http_gets_400_and_close(mock_server: MockLLMServer) -> None:
    """Something that is not HTTP gets a 400 and the connection is closed."""
    with socket.create_connection(("127.0.0.1", mock_server.port), timeout=5) as sock:
        sock.sendall(b"HELLO\r\n\r\n")
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 400")
        assert sock.recv(1) == b""


def test_requests_are_bounded_and_clear_resets() -> None:
    """max_recorded bounds the kept records; request_count counts all; clear() resets both."""
    with MockLLMServer(max_recorded=3) as server:
        http = pool(server)
        for _ in range(5):
            http.request("GET", "/v1/models")
        assert len(server.requests) == 3
        assert [r.index_on_connection for r in server.requests] == [3, 4, 5]
        assert server.request_count == 5
        server.clear()
        assert (server.requests, server.request_count, server.connections_opened) == ([], 0, 0)
        http.close()


def test_wait_for_requests(mock_server: MockLLMServer) -> None:
    """wait_for_requests returns True once enough requests came and False on timeout."""
    assert mock_server.wait_for_requests(1, timeout=0.01) is False
    http = pool(mock_server)
    worker = threading.Thread(target=lambda: http.request("GET", "/v1/models"))
    worker.start()
    assert mock_server.wait_for_requests(1, timeout=5.0) is True
    worker.join()
    http.close()


def test_threads_share_the_server(mock_server: MockLLMServer) -> None:
    """Eight threads with their own connections get every answer; every request is recorded."""
    http = urllib3.HTTPConnectionPool(
        "127.0.0.1", mock_server.port, maxsize=8, block=True, retries=False, timeout=5.0
    )

    def work(_: int) -> list[int]:
        return [chat(http).status for _ in range(25)]

    with ThreadPoolExecutor(8) as executor:
        results = [f.result() for f in [executor.submit(work, i) for i in range(8)]]
    assert results == [[200] * 25] * 8
    assert mock_server.request_count == 200
    assert 1 <= mock_server.connections_opened <= 8
    by_connection: dict[int, list[int]] = {}
    for record in mock_server.requests:
        by_connection.setdefault(record.connection_id, []).append(record.index_on_connection)
    assert all(indexes == list(range(1, len(indexes) + 1)) for indexes in by_connection.values())
    http.close()


# --------------------------------------------------------------------------- server-side closes


def test_close_after_requests_closes_silently() -> None:
    """close_after_requests=2: the 2nd answer has no Connection: close, then the server closes."""
    with (
        MockLLMServer(close_after_requests=2) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        raw_get(sock)
        read_response(sock)
        raw_get(sock)
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"connection" not in head.lower()
        assert sock.recv(1) == b""
        try:  # the next request on it finds it dead
            raw_get(sock)
            answer = read_response(sock)
        except (BrokenPipeError, ConnectionResetError):
            answer = (b"", b"")
        assert answer == (b"", b"")
        assert server.request_count == 2


def test_close_after_requests_with_urllib3_reconnects() -> None:
    """Once the server has closed the idle connection, urllib3 notices and opens a new one."""
    with MockLLMServer(close_after_requests=1) as server:
        http = pool(server)
        for _ in range(3):
            assert http.request("GET", "/v1/models").status == 200
            assert wait_until(lambda: server.connections_active == 0)
        assert [r.connection_id for r in server.requests] == [1, 2, 3]
        http.close()


def test_drop_after_requests_fails_the_reused_connection() -> None:
    """drop_after_requests=1: a request on a reused connection is read, then dropped unanswered."""
    with MockLLMServer(drop_after_requests=1) as server:
        http = pool(server)
        assert chat(http).status == 200
        with pytest.raises(ProtocolError):
            chat(http)
        assert chat(http).status == 200  # a fresh connection serves again
        records = server.requests
        assert [(r.connection_id, r.fault) for r in records] == [
            (1, None),
            (1, Fault.drop()),
            (2, None),
        ]
        http.close()


def test_idle_timeout_closes_the_connection() -> None:
    """idle_timeout: a connection idle that long is closed by the server without a word."""
    with (
        MockLLMServer(idle_timeout=0.05) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        raw_get(sock)
        head, _ = read_response(sock)
        assert b"connection" not in head.lower()
        assert sock.recv(1) == b""
        assert wait_until(lambda: server.connections_active == 0)


def test_idle_timeout_spares_busy_connections() -> None:
    """A connection that keeps sending inside the idle timeout stays open."""
    with MockLLMServer(idle_timeout=5.0) as server:
        http = pool(server)
        for _ in range(3):
            http.request("GET", "/v1/models")
        assert server.connections_opened == 1
        http.close()


# --------------------------------------------------------------------------- lifecycle


def test_stop_leaks_no_threads_or_fds() -> None:
    """After stop() no thread of the server is alive and no socket it opened is left."""
    sockets_before = socket_fds()
    server = MockLLMServer().start()
    port = server.port
    http = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=4, retries=False)
    with ThreadPoolExecutor(4) as executor:
        list(executor.map(lambda _: http.request("GET", "/v1/models").status, range(40)))
    threads = mock_threads(port)
    assert len(threads) >= 2  # the acceptor and at least one connection
    assert all(t.daemon for t in threads)
    http.close()
    server.stop()
    assert mock_threads(port) == []
    assert socket_fds() - sockets_before == set()


def test_stop_ends_a_stalled_stream_and_a_latency_wait() -> None:
    """stop() interrupts a stalled stream and a long latency pause; nothing is left behind."""
    sockets_before = socket_fds()
    server = MockLLMServer().start()
    port = server.port
    server.inject(Fault.stall(after_chunks=1))
    server.inject(Fault.delay(3600))
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    body = json.dumps({**CHAT, "stream": True}).encode()
    stalled.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert server.wait_for_requests(1)
    waiting = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    raw_get(waiting)
    assert server.wait_for_requests(2)
    assert stalled.recv(65536).startswith(b"HTTP/1.1 200")

    server.stop()

    assert mock_threads(port) == []
    assert server.connections_active == 0
    data = b""
    while more := stalled.recv(65536):  # the server's close ends the stalled stream
        data += more
    assert b"0\r\n\r\n" not in data
    assert waiting.recv(1) == b""
    stalled.close()
    waiting.close()
    assert socket_fds() - sockets_before == set()


def test_stop_is_idempotent_and_start_again_serves() -> None:
    """stop() twice is fine, and a stopped server can start again and serve."""
    server = MockLLMServer()
    with pytest.raises(RuntimeError):
        server.base_url  # noqa: B018
    server.start()
    assert server.start() is server
    server.stop()
    server.stop()
    with server:
        http = pool(server)
        assert http.request("GET", "/v1/models").status == 200
        http.close()
    assert mock_threads(server.port) == []


def test_addresses(mock_server: MockLLMServer) -> None:
    """base_url, origin and url() name the bound loopback port."""
    port = mock_server.port
    assert port > 0
    assert mock_server.base_url == f"http://127.0.0.1:{port}/v1"
    assert mock_server.origin == f"http://127.0.0.1:{port}"
    assert mock_server.url("/v1/models") == f"http://127.0.0.1:{port}/v1/models"
    assert str(port) in repr(mock_server)


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, Any]:
    """A server context signed by a throwaway CA, and that CA."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context, ca


def test_tls_keep_alive_and_stop_with_a_stalled_stream(tls: tuple[ssl.SSLContext, Any]) -> None:
    """With an ssl_context the server speaks HTTPS, keeps connections alive and stops cleanly."""
    context, ca = tls
    server = MockLLMServer(ssl_context=context).start()
    assert server.base_url.startswith("https://127.0.0.1:")
    with ca.cert_pem.tempfile() as ca_file:
        http = urllib3.HTTPSConnectionPool(
            "127.0.0.1", server.port, maxsize=1, retries=False, ca_certs=ca_file, timeout=5.0
        )
        assert chat(http).status == 200
        assert chat(http).json()["object"] == "chat.completion"
        assert server.connections_opened == 1
        server.inject(Fault.stall(after_chunks=1))
        body = json.dumps({**CHAT, "stream": True})
        stream = http.request(
            "POST", "/v1/chat/completions", body=body, preload_content=False, timeout=0.2
        )
        assert stream.status == 200
        server.stop()
        with pytest.raises(ProtocolError):  # the server went away in the middle of the stream
            stream.read()
        stream.release_conn()
        http.close()
    assert mock_threads(server.port) == []
