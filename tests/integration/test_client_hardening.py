"""Issue 10, the client's part: redirects, base URLs, option checks, deadlines, streams."""

from __future__ import annotations

import contextlib
import gc
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rawserver import RawServer, read_request

import llmpool
from llmpool import exceptions as exc
from llmpool.testing import MockLLMServer

HI = [{"role": "user", "content": "hi"}]
KEY = "sk-secret-0123456789abcdef"
ANSWER = json.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
).encode()


def _reply(status: str = "200 OK", body: bytes = ANSWER, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def _headers(request: bytes) -> dict[str, str]:
    head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


class Recorder:
    """Records every request a raw behaviour saw (request line and headers)."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.lock = threading.Lock()

    def add(self, request: bytes) -> None:
        with self.lock:
            self.requests.append(request)


# --------------------------------------------------------------------------- redirects


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, Any]:
    """A server context for 127.0.0.1 signed by a throwaway CA, and that CA."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context, ca


def test_https_to_http_redirect_on_the_same_host_drops_the_key(
    tls: tuple[ssl.SSLContext, Any], tmp_path: Any
) -> None:
    """A redirect from https to http on the same host:port never sends the key in cleartext."""
    context, ca = tls
    seen = Recorder()

    def behaviour(conn: socket.socket, number: int) -> None:
        if number == 0:  # the https leg: answer with a downgrade
            with context.wrap_socket(conn, server_side=True) as tls_conn:
                if read_request(tls_conn) is not None:
                    where = f"http://127.0.0.1:{server.port}/v1/chat/completions"
                    tls_conn.sendall(_reply("302 Found", b"", f"Location: {where}\r\n"))
            return
        request = read_request(conn)
        if request is not None:
            seen.add(request)
            conn.sendall(_reply())

    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with RawServer(behaviour) as server:
        url = f"https://127.0.0.1:{server.port}/v1"
        pool = llmpool.PoolConfig(ca_certs=str(ca_file))
        with llmpool.Client(url, api_key=KEY, pool=pool, follow_redirects=True) as client:
            assert client.chat("m", HI).text == "ok"
    assert len(seen.requests) == 1
    assert "authorization" not in _headers(seen.requests[0])
    assert KEY.encode() not in seen.requests[0]


def test_cross_host_redirect_drops_cookie_and_custom_key_headers() -> None:
    """On another host, Cookie, Authorization and any key header are gone; plain ones stay."""
    seen = Recorder()

    def target(conn: socket.socket, _: int) -> None:
        request = read_request(conn)
        if request is not None:
            seen.add(request)
            conn.sendall(_reply())

    with RawServer(target) as other:

        def hop(conn: socket.socket, _: int) -> None:
            if read_request(conn) is not None:
                where = f"{other.url}/v1/chat/completions"
                conn.sendall(_reply("307 Temporary Redirect", b"", f"Location: {where}\r\n"))

        with RawServer(hop) as first:
            headers = {"Cookie": "session=abc", "X-Acme-Key": "acme-secret", "X-Trace": "t1"}
            with llmpool.Client(
                first.url + "/v1", api_key=KEY, default_headers=headers, follow_redirects=True
            ) as client:
                client.chat("m", HI)
    sent = _headers(seen.requests[0])
    for name in ("authorization", "cookie", "x-acme-key"):
        assert name not in sent
    assert sent["x-trace"] == "t1" and "idempotency-key" in sent


def test_same_origin_redirect_keeps_the_key() -> None:
    """A redirect on the same scheme, host and port keeps the credentials."""
    seen = Recorder()

    def behaviour(conn: socket.socket, _: int) -> None:
        while (request := read_request(conn)) is not None:
            if b"/old/" in request.split(b"\r\n", 1)[0]:
                conn.sendall(
                    _reply("308 Permanent Redirect", b"", "Location: /v1/chat/completions\r\n")
                )
            else:
                seen.add(request)
                conn.sendall(_reply())

    with RawServer(behaviour) as server:
        with llmpool.Client(server.url + "/old", api_key=KEY, follow_redirects=True) as client:
            client.chat("m", HI)
    assert _headers(seen.requests[0])["authorization"] == f"Bearer {KEY}"


# --------------------------------------------------------------------------- base URLs


def _recording_server(seen: Recorder) -> RawServer:
    def behaviour(conn: socket.socket, _: int) -> None:
        while (request := read_request(conn)) is not None:
            seen.add(request)
            conn.sendall(_reply())

    return RawServer(behaviour)


def test_query_string_in_base_url_is_kept_on_every_request() -> None:
    """A base URL's ?api-version=... reaches the server on each request, after the path."""
    seen = Recorder()
    with _recording_server(seen) as server:
        with llmpool.Client(server.url + "/v1/?api-version=2024-01", api_key=KEY) as client:
            client.chat("m", HI)
            assert client.base_url == server.url + "/v1?api-version=2024-01"
    line = seen.requests[0].split(b"\r\n", 1)[0]
    assert line == b"POST /v1/chat/completions?api-version=2024-01 HTTP/1.1"


def test_upper_case_scheme_works() -> None:
    """HTTP:// is the same scheme as http://."""
    seen = Recorder()
    with _recording_server(seen) as server:
        with llmpool.Client(server.url.replace("http://", "HTTP://") + "/v1") as client:
            assert client.chat("m", HI).text == "ok"
            assert client.base_url.startswith("http://")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:99999/v1",
        "http://127.0.0.1:0/v1",
        "http://127.0.0.1:8000/v1#frag",
        "ftp://127.0.0.1/v1",
        "http:///v1",
        "127.0.0.1:8000/v1",
    ],
)
def test_unusable_base_urls_are_refused(url: str) -> None:
    """A bad port, a fragment, another scheme or no host is a ConfigError on base_url."""
    with pytest.raises(exc.ConfigError) as info:
        llmpool.Client(url)
    assert info.value.key == "base_url"


def test_credentials_in_base_url_are_refused_and_never_shown() -> None:
    """user:password@ in base_url is refused, and the password appears in no text."""
    with pytest.raises(exc.ConfigError) as info:
        llmpool.Client("http://user:hunter2pass@127.0.0.1:8000/v1")
    err = info.value
    for text in (str(err), repr(err), repr(err.__dict__), repr(err.args)):
        assert "hunter2pass" not in text
    assert "***@127.0.0.1:8000" in str(err)


# --------------------------------------------------------------------------- option checks


BAD_SECONDS = [-1, 0, float("nan"), float("inf"), "5", True]


@pytest.mark.parametrize("value", BAD_SECONDS)
@pytest.mark.parametrize("name", ["timeout", "deadline"])
def test_bad_seconds_are_refused_at_construction(name: str, value: Any) -> None:
    """timeout and deadline must be finite numbers > 0: ConfigError naming the option."""
    with pytest.raises(exc.ConfigError) as info:
        llmpool.Client("http://127.0.0.1:9/v1", **{name: value})
    assert info.value.key == name


@pytest.mark.parametrize("value", BAD_SECONDS)
@pytest.mark.parametrize("name", ["timeout", "deadline"])
def test_bad_seconds_are_refused_per_call_without_sending(name: str, value: Any) -> None:
    """A bad per-call timeout or deadline fails before anything is sent."""
    seen = Recorder()
    with _recording_server(seen) as server:
        with llmpool.Client(server.url + "/v1") as client:
            with pytest.raises(exc.ConfigError) as info:
                client.chat("m", HI, **{name: value})
            assert client.stats()["client"]["calls"] == 0
    assert info.value.key == name and not seen.requests


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_response_bytes", -1),
        ("max_response_bytes", "big"),
        ("max_response_bytes", True),
        ("max_stream_text", 0),
        ("follow_redirects", "yes"),
        ("retry", "nope"),
    ],
)
def test_bad_options_are_refused_in_the_constructor_and_with_options(name: str, value: Any) -> None:
    """Each option is checked the same way by Client() and with_options()."""
    with pytest.raises(exc.ConfigError) as info:
        llmpool.Client("http://127.0.0.1:9/v1", **{name: value})
    assert info.value.key == name
    with llmpool.Client("http://127.0.0.1:9/v1") as client:
        with pytest.raises(exc.ConfigError) as info:
            client.with_options(**{name: value})
        assert info.value.key == name


def test_bad_extra_header_is_refused_without_showing_it() -> None:
    """A per-call header value with a newline is a ConfigError that hides the value."""
    seen = Recorder()
    with _recording_server(seen) as server:
        with llmpool.Client(server.url + "/v1") as client:
            with pytest.raises(exc.ConfigError) as info:
                client.chat("m", HI, extra_headers={"X-Key": "sk-hidden-value\n"})
    assert "sk-hidden-value" not in str(info.value) + repr(info.value)
    assert info.value.key == "extra_headers" and not seen.requests


# --------------------------------------------------------------------------- error bodies


def test_large_503_body_is_retried_as_a_503() -> None:
    """A 503 whose body exceeds max_response_bytes is retried as a 503, not ResponseTooLarge."""
    big = b"x" * (2 * 1024 * 1024)

    def behaviour(conn: socket.socket, number: int) -> None:
        if read_request(conn) is not None:  # the first connection gets the 503
            conn.sendall(_reply("503 Service Unavailable", big) if number == 0 else _reply())

    with RawServer(behaviour) as server:
        with llmpool.Client(
            server.url + "/v1", max_response_bytes=1024 * 1024, sleep=lambda _s: None
        ) as client:
            assert client.chat("m", HI).text == "ok"
            stats = client.stats()
    assert stats["client"]["retries"] == 1 and stats["client"]["errors"] == 0


# --------------------------------------------------------------------------- deadlines and hooks


class SlowHook(llmpool.LLMPlugin):
    """A plugin whose before_request sleeps longer than the call's deadline."""

    name = "slow"

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def before_request(self, ctx: Any, request: Any) -> None:
        time.sleep(self.seconds)


def test_hook_that_overruns_the_deadline_fails_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """A hook that spends the deadline makes the call fail with DeadlineExceeded, unsent."""
    seen = Recorder()
    with _recording_server(seen) as server:
        with llmpool.Client(server.url + "/v1", plugins=[SlowHook(0.3)], deadline=0.1) as client:
            with pytest.raises(exc.DeadlineExceeded) as info:
                client.chat("m", HI)
            stats = client.stats()["client"]
    assert "before_request" in str(info.value)
    assert not seen.requests
    assert stats["errors"] == 1 and stats["errors_by_type"] == {"DeadlineExceeded": 1}
    assert any("overran" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- streams


class StreamEnds(llmpool.LLMPlugin):
    """Counts on_stream_end calls."""

    name = "ends"

    def __init__(self) -> None:
        super().__init__()
        self.ended = 0

    def on_stream_end(self, ctx: Any, stream: Any) -> None:
        self.ended += 1


@contextlib.contextmanager
def _gc_disabled() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_abandoned_streams_give_their_connection_back_at_once(mock_server: MockLLMServer) -> None:
    """Breaking out of a stream used without `with` returns its connection by refcounting."""
    ends = StreamEnds()
    pool = llmpool.PoolConfig(max_connections=4, pool_timeout=0.5)
    with llmpool.Client(mock_server.base_url, pool=pool, plugins=[ends]) as client:
        with _gc_disabled():
            for _ in range(6):
                for _chunk in client.chat("m", HI, stream=True):
                    break
            assert client.pool.get_stats()["in_use"] == 0
    assert ends.ended == 6


# --------------------------------------------------------------------------- slow peers


SENT: list[int] = []  # pieces each trickle managed to send before the client hung up


def _trickle(conn: socket.socket, head: bytes, piece: bytes, count: int) -> None:
    """Send *head*, then *piece* every 0.1 s, *count* times (stops when the client hangs up)."""
    SENT.clear()
    if read_request(conn) is None:
        return
    conn.sendall(head)
    sent = 0
    try:
        for _ in range(count):
            time.sleep(0.1)
            conn.sendall(piece)
            sent += 1
    finally:
        SENT.append(sent)


def _hung_up_early(server: RawServer) -> bool:
    """Whether the client left before the trickle's 40 pieces were all sent."""
    server.close()  # joins the behaviour threads
    return bool(SENT) and SENT[0] < 20


def test_deadline_bounds_a_trickled_body() -> None:
    """A body trickled slower than the deadline fails with DeadlineExceeded, not success."""
    body = b"x" * 40
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with RawServer(lambda c, _n: _trickle(c, head, b"x", 40)) as server:
        with llmpool.Client(server.url + "/v1", timeout=1.0, deadline=0.5) as client:
            with pytest.raises(exc.DeadlineExceeded):
                client.chat("m", HI)
        assert _hung_up_early(server)


def test_deadline_bounds_trickled_headers() -> None:
    """Headers trickled one line at a time cannot stretch the call past its deadline."""
    head = b"HTTP/1.1 200 OK\r\n"
    with RawServer(lambda c, _n: _trickle(c, head, b"X-Slow: 1\r\n", 40)) as server:
        with llmpool.Client(server.url + "/v1", timeout=1.0, deadline=0.5) as client:
            with pytest.raises(exc.DeadlineExceeded):
                client.chat("m", HI)
        assert _hung_up_early(server)


def test_deadline_bounds_a_stream_of_keepalive_comments() -> None:
    """A stream that sends only `: ping` comments ends with DeadlineExceeded at the deadline."""
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    ping = b"8\r\n: ping\n\n\r\n"
    with RawServer(lambda c, _n: _trickle(c, head, ping, 40)) as server:
        with llmpool.Client(server.url + "/v1", timeout=1.0, deadline=0.5) as client:
            with pytest.raises(exc.DeadlineExceeded):
                with client.chat("m", HI, stream=True) as stream:
                    for _ in stream:
                        pass
            assert client.stats()["pool"]["in_use"] == 0
        assert _hung_up_early(server)


def test_deadline_bounds_a_stream_after_delivery() -> None:
    """A stream that delivered a chunk and then only pings fails with DeadlineExceeded."""
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    event = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    first = f"{len(event):x}\r\n".encode() + event + b"\r\n"
    ping = b"8\r\n: ping\n\n\r\n"

    def behaviour(conn: socket.socket, _: int) -> None:
        _trickle(conn, head + first, ping, 40)

    with RawServer(behaviour) as server:
        with llmpool.Client(server.url + "/v1", timeout=1.0, deadline=0.5) as client:
            with pytest.raises(exc.DeadlineExceeded) as info:
                with client.chat("m", HI, stream=True) as stream:
                    for _ in stream:
                        pass
        assert _hung_up_early(server)
    assert stream.text == "hi"
    assert isinstance(info.value.last_error, exc.ReadTimeout)
