"""Transport hardening (issue 10) against raw loopback sockets: 1xx replies,
decoded size limits, close_idle under load, secrets in error text, per-read deadlines."""

from __future__ import annotations

import json
import pickle
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from rawserver import OK, RawServer, read_request

import llmpool
from llmpool import PoolConfig
from llmpool import exceptions as exc
from llmpool.pool import ConnectionPool
from llmpool.pool.adapter import RequestsTransport

HI = [{"role": "user", "content": "hi"}]
ONE_TRY = llmpool.RetryPolicy(max_attempts=1)
FAKE_KEY = "sk-FAKE0123456789abcdef"


def chat_reply(text: str) -> bytes:
    """A complete keep-alive HTTP reply carrying an OpenAI chat completion saying *text*."""
    body = json.dumps(
        {
            "id": "c",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _serve_ok(conn: socket.socket) -> None:
    """Answer every request on *conn* with a small 200 until the peer closes."""
    while read_request(conn) is not None:
        conn.sendall(OK)


def _shows(err: BaseException, secret: str) -> bool:
    """Whether *secret* appears in str(), repr() or the pickle of *err*."""
    texts = [str(err), repr(err), pickle.dumps(err).decode("latin-1")]
    texts.append(str(getattr(err, "url", "")))
    return any(secret in text for text in texts)


# --------------------------------------------------------------------------- 1xx replies


def _serve_with_interim(interim: bytes) -> RawServer:
    """A keep-alive server that sends *interim* (1xx replies), pauses, then a
    200 whose answer names the request's number on the server."""
    counter = [0]
    lock = threading.Lock()
    pause = threading.Event()

    def behaviour(conn: socket.socket, _: int) -> None:
        while read_request(conn) is not None:
            with lock:
                number = counter[0]
                counter[0] += 1
            conn.sendall(interim)
            pause.wait(0.05)  # the final reply comes later, as from a real server
            conn.sendall(chat_reply(f"answer {number}"))

    return RawServer(behaviour)


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"


def test_early_hints_do_not_shift_answers_on_a_reused_connection() -> None:
    """103 Early Hints before each 200 is skipped: 3 calls on one socket get their own answers."""
    with _serve_with_interim(EARLY_HINTS) as server:
        pool = PoolConfig(max_connections=1)
        with llmpool.Client(base_url=server.url, pool=pool, api_key="k", retry=ONE_TRY) as client:
            answers = [client.chat("m", HI).text for _ in range(3)]
            stats = client.stats()["pool"]
    assert answers == ["answer 0", "answer 1", "answer 2"]
    assert server.connections == 1
    assert stats["connection_reuses"] == 2


def test_several_informational_replies_in_a_row_are_skipped() -> None:
    """100, 102 and 103 (with headers) in a row before the 200 are all skipped, call after call."""
    interim = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 102 Processing\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n"
        b"Link: </b.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </c.js>; rel=preload\r\n\r\n"
    )
    with _serve_with_interim(interim) as server:
        pool = PoolConfig(max_connections=1)
        with llmpool.Client(base_url=server.url, pool=pool, api_key="k", retry=ONE_TRY) as client:
            answers = [client.chat("m", HI).text for _ in range(3)]
    assert answers == ["answer 0", "answer 1", "answer 2"]
    assert server.connections == 1


def test_endless_informational_replies_are_a_protocol_error() -> None:
    """A server that only ever sends 1xx replies gets ProtocolError, not a loop or a hang."""

    def behaviour(conn: socket.socket, _: int) -> None:
        read_request(conn)
        conn.sendall(EARLY_HINTS * 1000)

    with RawServer(behaviour) as server:
        with ConnectionPool(PoolConfig(read_timeout=5.0)) as pool:
            with pytest.raises(exc.ProtocolError):
                pool.request("GET", server.url + "/")


def test_switching_protocols_never_goes_back_to_the_pool() -> None:
    """A 101 reply is final and its connection is closed, never reused for the next request."""

    def behaviour(conn: socket.socket, _: int) -> None:
        if read_request(conn) is not None:
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"
            )
            conn.sendall(b"\x00\x01 not http any more")
            while read_request(conn) is not None:
                conn.sendall(b"garbage\r\n\r\n")

    def ok(conn: socket.socket, number: int) -> None:
        if number == 0:
            behaviour(conn, number)
        else:
            while read_request(conn) is not None:
                conn.sendall(OK)

    with RawServer(ok) as server:
        with ConnectionPool(PoolConfig(max_connections=1)) as pool:
            assert pool.request("GET", server.url + "/").status == 101
            assert pool.request("GET", server.url + "/").content == b'{"ok":true}'
    assert server.connections == 2


# --------------------------------------------------------------------------- decoded size limit

DECODED = 64 * 1024 * 1024  # what the bomb inflates to
LIMIT = 1024 * 1024
PEAK_BOUND = 8 * 1024 * 1024  # far below DECODED: the body was never inflated whole


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """64 MiB of zeros, gzip-compressed (about 64 KB on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1024 * 1024)
    parts = [packer.compress(zeros) for _ in range(DECODED // len(zeros))]
    parts.append(packer.flush())
    return b"".join(parts)


def _bomb_server(body: bytes, framing: str) -> RawServer:
    def behaviour(conn: socket.socket, _: int) -> None:
        if read_request(conn) is None:
            return
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        if framing == "length":
            conn.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        elif framing == "chunked":
            conn.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
            for i in range(0, len(body), 16384):
                piece = body[i : i + 16384]
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.sendall(b"0\r\n\r\n")
        else:  # delimited by the server closing the connection
            conn.sendall(f"{head}Connection: close\r\n\r\n".encode() + body)
            conn.shutdown(socket.SHUT_WR)
        read_request(conn)  # hold the connection until the client closes it

    return RawServer(behaviour)


def _peak_of(work: object) -> int:
    """The tracemalloc peak (bytes) while running *work*()."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        work()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_gzip_bomb_is_refused_by_its_decoded_size(bomb: bytes, framing: str) -> None:
    """A gzip body over max_bytes once decoded raises ResponseTooLarge, read in bounded pieces."""
    with _bomb_server(bomb, framing) as server:
        with ConnectionPool() as pool:
            response = pool.request("GET", server.url + "/", stream=True)
            errors: list[BaseException] = []

            def read() -> None:
                try:
                    response.read(max_bytes=LIMIT)
                except exc.ResponseTooLarge as err:
                    errors.append(err)

            peak = _peak_of(read)
    assert len(errors) == 1 and errors[0].limit == LIMIT  # type: ignore[attr-defined]
    assert peak < PEAK_BOUND, f"peak {peak} bytes while refusing the body"


def test_gzip_bomb_through_the_client_is_response_too_large(bomb: bytes) -> None:
    """Client(max_response_bytes=1 MiB) refuses a 64 MiB-decoded gzip body with a Content-Length."""
    with _bomb_server(bomb, "length") as server:
        with llmpool.Client(
            server.url, api_key="k", retry=ONE_TRY, max_response_bytes=LIMIT
        ) as client:
            with pytest.raises(exc.ResponseTooLarge):
                client.chat("m", HI)


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_streamed_gzip_bomb_comes_in_bounded_pieces(bomb: bytes, framing: str) -> None:
    """iter_bytes never inflates more than 64 KiB at a time, whatever the framing."""
    sizes: list[int] = []
    with _bomb_server(bomb, framing) as server:
        with ConnectionPool() as pool:
            response = pool.request("GET", server.url + "/", stream=True)

            def stream() -> None:
                with response:
                    for chunk in response.iter_bytes():
                        sizes.append(len(chunk))
                        if sum(sizes) >= 4 * LIMIT:
                            break

            peak = _peak_of(stream)
    assert sum(sizes) >= 4 * LIMIT
    assert max(sizes) <= 65536
    assert peak < PEAK_BOUND


def test_plain_body_within_the_limit_is_read_whole() -> None:
    """An identity body with a Content-Length within the limit is returned as sent."""
    body = b"x" * 300_000

    def behaviour(conn: socket.socket, _: int) -> None:
        while read_request(conn) is not None:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    with RawServer(behaviour) as server:
        with ConnectionPool() as pool:
            assert pool.request("GET", server.url + "/").content == body
            response = pool.request("GET", server.url + "/", stream=True)
            assert response.read(max_bytes=len(body)) == body
            response = pool.request("GET", server.url + "/", stream=True)
            with pytest.raises(exc.ResponseTooLarge):
                response.read(max_bytes=len(body) // 2)
            assert pool.request("GET", server.url + "/").content == body
            assert pool.get_stats()["connections_created"] == 2  # the refused one was closed


# --------------------------------------------------------------------------- close_idle


def test_close_idle_in_a_loop_never_fails_a_call() -> None:
    """While another thread calls close_idle() without pause, 32 threads x 100 calls all succeed."""
    reply = chat_reply("hi")

    def behaviour(conn: socket.socket, _: int) -> None:
        while read_request(conn) is not None:
            conn.sendall(reply)

    done = threading.Event()
    rounds = [0]
    with RawServer(behaviour) as server:
        pool = ConnectionPool(PoolConfig(max_connections=8, pool_timeout=30.0))
        with llmpool.Client(server.url, api_key="k", pool=pool, retry=ONE_TRY) as client:

            def shed() -> None:
                while not done.is_set() and rounds[0] < 10_000_000:
                    pool.close_idle()
                    rounds[0] += 1

            def work(_: int) -> int:
                return sum(client.chat("m", HI).text == "hi" for _ in range(100))

            shedder = threading.Thread(target=shed, name="test-close-idle")
            shedder.start()
            try:
                with ThreadPoolExecutor(32) as ex:
                    results = [f.result() for f in [ex.submit(work, i) for i in range(32)]]
            finally:
                done.set()
                shedder.join()
            stats = pool.get_stats()
        pool.close()
    assert results == [100] * 32
    assert rounds[0] > 0
    assert stats["failed_requests"] == 0
    assert stats["in_use"] == 0


def test_close_idle_keeps_the_slot_count() -> None:
    """close_idle() closes idle sockets, yet max_connections calls can still run at once."""
    with RawServer(lambda c, n: _serve_ok(c)) as server:
        with ConnectionPool(PoolConfig(max_connections=3, pool_timeout=5.0)) as pool:
            held = [pool.request("GET", server.url + "/", stream=True) for _ in range(3)]
            for response in held:
                response.read()
            assert pool.close_idle() == 3
            assert pool.get_stats()["idle"] == 0
            again = [pool.request("GET", server.url + "/", stream=True) for _ in range(3)]
            for response in again:
                assert response.read() == b'{"ok":true}'
            assert pool.host_pool(server.url).pool.qsize() == 3


# ------------------------------------------------------------------ header values in errors


def test_header_value_in_a_lower_error_never_shows() -> None:
    """A bad header value refused below the transport is not copied into the mapped error."""
    with RawServer(lambda c, n: _serve_ok(c)) as server:
        with ConnectionPool() as pool:
            with pytest.raises(exc.TransportError) as info:
                pool.request(
                    "GET", server.url + "/", headers={"Authorization": f"Bearer {FAKE_KEY}\n"}
                )
    assert FAKE_KEY in str(info.value.__cause__)  # the lower error did hold it
    assert not _shows(info.value, FAKE_KEY)
    assert "ValueError" in str(info.value)


def test_header_value_through_requests_never_shows() -> None:
    """The requests transport does not copy requests' invalid-header text either."""
    with RawServer(lambda c, n: _serve_ok(c)) as server:
        with ConnectionPool() as pool:
            transport = RequestsTransport(pool)
            with pytest.raises(exc.TransportError) as info:
                transport.request("GET", server.url + "/", headers={"X-Api-Key": f"{FAKE_KEY}\n"})
    assert not _shows(info.value, FAKE_KEY)


# ------------------------------------------------------------ URLs in errors and responses


def test_password_in_url_never_shows_in_errors() -> None:
    """A password and a key-like query parameter in the URL are masked in the error and its .url."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://alice:hunter2secret@127.0.0.1:{port}/v1/chat?api_key={FAKE_KEY}&x=1"
    with ConnectionPool() as pool:
        with pytest.raises(exc.ConnectError) as info:
            pool.request("GET", url)
    assert not _shows(info.value, "hunter2secret")
    assert not _shows(info.value, FAKE_KEY)
    assert f"127.0.0.1:{port}/v1/chat" in info.value.url  # type: ignore[attr-defined]


def test_password_in_url_never_shows_in_responses_or_read_errors() -> None:
    """Response.url, its repr, and an error while reading the body all mask the password."""

    def behaviour(conn: socket.socket, _: int) -> None:
        read_request(conn)
        conn.sendall(OK)
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        conn.close()

    with RawServer(behaviour) as server:
        url = server.url.replace("http://", "http://alice:hunter2secret@") + "/v1?token=" + FAKE_KEY
        with ConnectionPool() as pool:
            response = pool.request("GET", url)
            shown = [response.url, repr(response)]
            with pytest.raises(exc.ProtocolError) as info:
                pool.request("GET", url)
    assert not any("hunter2secret" in s or FAKE_KEY in s for s in shown)
    assert not _shows(info.value, "hunter2secret")
    assert not _shows(info.value, FAKE_KEY)


# --------------------------------------------------------------------------- deadline per read


def _trickle(head: bytes, piece: bytes, times: int, tail: bytes = b"") -> RawServer:
    """A server that sends *head*, then *piece* every 0.1 s (*times* times), then *tail*."""

    def behaviour(conn: socket.socket, _: int) -> None:
        if read_request(conn) is None:
            return
        conn.sendall(head)
        tick = threading.Event()
        for _ in range(times):
            tick.wait(0.1)
            conn.sendall(piece)
        conn.sendall(tail)
        read_request(conn)

    return RawServer(behaviour)


@pytest.fixture
def slow_pool() -> Iterator[ConnectionPool]:
    """A pool whose read timeout (1 s) is far above the servers' 0.1 s trickle."""
    with ConnectionPool(PoolConfig(read_timeout=1.0)) as pool:
        yield pool


def test_deadline_bounds_trickled_headers(slow_pool: ConnectionPool) -> None:
    """Header lines trickled within the read timeout still hit the deadline: ReadTimeout."""
    with _trickle(b"HTTP/1.1 200 OK\r\n", b"X-Slow: 1\r\n", 30, OK.partition(b"\r\n")[2]) as server:
        with pytest.raises(exc.ReadTimeout):
            slow_pool.request("GET", server.url + "/", deadline=time.monotonic() + 0.5)


def test_deadline_bounds_a_trickled_body(slow_pool: ConnectionPool) -> None:
    """A body trickled a byte at a time within the read timeout hits the deadline: ReadTimeout."""
    with _trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n", b"x", 30) as server:
        with pytest.raises(exc.ReadTimeout):
            slow_pool.request("GET", server.url + "/", deadline=time.monotonic() + 0.5)


def test_deadline_bounds_a_stream_of_comments(slow_pool: ConnectionPool) -> None:
    """An SSE stream of ': ping' comments read with iter_bytes hits the deadline: ReadTimeout."""
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    ping = b"8\r\n: ping\n\n\r\n"
    with _trickle(head, ping, 30, b"0\r\n\r\n") as server:
        response = slow_pool.request(
            "GET", server.url + "/", stream=True, deadline=time.monotonic() + 0.5
        )
        pieces = []
        with response, pytest.raises(exc.ReadTimeout):
            for piece in response.iter_bytes():
                pieces.append(piece)
    assert 0 < len(pieces) < 30


def test_deadline_bounds_drain(slow_pool: ConnectionPool) -> None:
    """drain() of a trickled body stops at the deadline and closes the connection."""
    with _trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n", b"x", 30) as server:
        response = slow_pool.request(
            "GET", server.url + "/", stream=True, deadline=time.monotonic() + 0.5
        )
        assert response.drain() is False
    assert slow_pool.get_stats()["idle"] == 0


def test_passed_deadline_fails_at_once_without_sending(slow_pool: ConnectionPool) -> None:
    """A deadline already passed raises ReadTimeout and sends nothing."""
    with RawServer(lambda c, n: _serve_ok(c)) as server:
        with pytest.raises(exc.ReadTimeout):
            slow_pool.request("POST", server.url + "/", body=b"{}", deadline=time.monotonic() - 1)
        assert (
            slow_pool.request("GET", server.url + "/", deadline=time.monotonic() + 5).status == 200
        )
        stats = slow_pool.get_stats()
    assert stats["total_requests"] == 1


def test_deadline_is_forgotten_when_the_connection_goes_back(slow_pool: ConnectionPool) -> None:
    """A connection reused after its last call's deadline passed reads normally (no stale bound)."""
    with RawServer(lambda c, n: _serve_ok(c)) as server:
        deadline = time.monotonic() + 0.2
        assert slow_pool.request("GET", server.url + "/", deadline=deadline).status == 200
        while time.monotonic() <= deadline:  # let that deadline pass (bounded by its own value)
            threading.Event().wait(0.05)
        assert slow_pool.request("GET", server.url + "/").status == 200
        assert slow_pool.get_stats()["connection_reuses"] == 1


def test_deadline_through_the_requests_transport(slow_pool: ConnectionPool) -> None:
    """RequestsTransport.request(deadline=...) bounds the reads the same way."""
    with _trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n", b"x", 30) as server:
        transport = RequestsTransport(slow_pool)
        with pytest.raises(exc.ReadTimeout):
            transport.request("GET", server.url + "/", deadline=time.monotonic() + 0.5)
