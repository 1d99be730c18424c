"""ConnectionPool against real loopback sockets: reuse, caps, expiry, stale retry, stats."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import trustme
from rawserver import OK, RawServer, read_request, reset

from llmpool import PoolConfig, sockets
from llmpool import exceptions as exc
from llmpool.pool import ConnectionPool, connections, transport
from llmpool.pool.adapter import PooledHTTPAdapter


@pytest.fixture
def ok_server() -> Iterator[RawServer]:
    holder: list[RawServer] = []
    server = RawServer(lambda conn, n: holder[0].serve_forever_ok(conn))
    holder.append(server)
    with server:
        yield server


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A fake monotonic clock for the transport (advance it by editing [0])."""
    now = [1000.0]
    monkeypatch.setattr(connections, "_now", lambda: now[0])
    return now


def test_sequential_requests_reuse_one_connection(ok_server: RawServer) -> None:
    """200 sequential POSTs to one host open one connection; reuse rate >= 99%."""
    with ConnectionPool() as pool:
        for _ in range(200):
            response = pool.request("POST", ok_server.url + "/v1/x", body=b"{}")
            assert response.status == 200 and response.content == b'{"ok":true}'
        stats = pool.get_stats()
    assert stats["connections_created"] == 1
    assert ok_server.connections == 1
    assert stats["reuse_rate"] >= 0.99
    assert stats["total_requests"] == stats["successful_requests"] == 200
    assert stats["hosts"][f"http://127.0.0.1:{ok_server.port}"]["total_requests"] == 200


def test_threads_within_cap_reuse_connections(ok_server: RawServer) -> None:
    """8 threads x 100 requests over max_connections=8: at most 8 sockets, reuse >= 99%."""
    with ConnectionPool(PoolConfig(max_connections=8)) as pool:

        def work(_: int) -> int:
            return sum(pool.request("GET", ok_server.url + "/").status for _ in range(100))

        with ThreadPoolExecutor(8) as ex:
            results = [f.result() for f in [ex.submit(work, i) for i in range(8)]]
        stats = pool.get_stats()
    assert results == [200 * 100] * 8
    assert stats["connections_created"] <= 8
    assert ok_server.connections == stats["connections_created"]
    assert stats["reuse_rate"] >= 0.99
    assert stats["in_use"] == 0


def test_cap_is_real_and_waiters_are_counted(ok_server: RawServer) -> None:
    """With max_connections=2 and 16 threads, never more than 2 sockets are open."""
    with ConnectionPool(PoolConfig(max_connections=2)) as pool:
        with ThreadPoolExecutor(16) as ex:
            futures = [ex.submit(pool.request, "GET", ok_server.url + "/") for _ in range(400)]
            assert all(f.result().status == 200 for f in futures)
        stats = pool.get_stats()
    assert ok_server.connections <= 2
    assert stats["peak_in_use"] <= 2
    assert stats["acquire_wait"]["count"] == 400
    assert stats["discarded"] == 0


def test_pool_timeout_when_every_connection_is_busy(ok_server: RawServer) -> None:
    """A caller waits pool_timeout for a busy pool, then gets PoolTimeout (counted)."""
    with ConnectionPool(PoolConfig(max_connections=1, pool_timeout=0.05)) as pool:
        held = pool.request("GET", ok_server.url + "/", stream=True)
        with pytest.raises(exc.PoolTimeout) as info:
            pool.request("GET", ok_server.url + "/")
        assert info.value.retryable
        held.close()
        assert pool.request("GET", ok_server.url + "/").status == 200
        stats = pool.get_stats()
    assert stats["pool_timeouts"] == 1
    assert stats["failed_requests"] == 1
    assert stats["total_requests"] == stats["successful_requests"] + stats["failed_requests"]


def _dies_on_second_request(conn: socket.socket, number: int, how: str) -> None:
    """Connection 0 answers one request, then closes on the next one without answering."""
    if number > 0:
        while read_request(conn) is not None:
            conn.sendall(OK)
        return
    read_request(conn)
    conn.sendall(OK)
    if read_request(conn) is not None:
        if how == "reset":
            reset(conn)
        else:
            conn.close()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_stale_reused_connection_is_retried_once_on_a_fresh_one(how: str) -> None:
    """A POST that dies on a reused socket before any response byte is retried on a new one."""
    with RawServer(lambda c, n: _dies_on_second_request(c, n, how)) as server:
        with ConnectionPool() as pool:
            assert pool.request("POST", server.url + "/a", body=b"1").status == 200
            response = pool.request("POST", server.url + "/b", body=b"2")
            assert response.status == 200
            stats = pool.get_stats()
    assert stats["stale_retries"] == 1
    assert stats["connections_created"] == 2
    assert stats["total_requests"] == stats["successful_requests"] == 2


def test_failure_on_fresh_connection_is_not_retried() -> None:
    """A connection that dies on its first request raises ProtocolError, no stale retry."""
    with RawServer(lambda c, n: (read_request(c), c.close())) as server:
        with ConnectionPool() as pool:
            with pytest.raises(exc.ProtocolError) as info:
                pool.request("POST", server.url + "/", body=b"x")
            stats = pool.get_stats()
    assert isinstance(info.value.__cause__, Exception)
    assert server.connections == 1
    assert stats["stale_retries"] == 0
    assert stats["failed_requests"] == 1


def test_failure_after_response_bytes_is_not_retried() -> None:
    """Headers arrive, then the connection closes: the read fails, nothing is retried."""
    head = b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial'

    def behaviour(conn: socket.socket, _: int) -> None:
        read_request(conn)
        conn.sendall(head)
        conn.close()

    with RawServer(behaviour) as server:
        with ConnectionPool() as pool:
            with pytest.raises(exc.ProtocolError):
                pool.request("POST", server.url + "/", body=b"x")
            stats = pool.get_stats()
    assert server.connections == 1
    assert stats["stale_retries"] == 0
    assert stats["in_use"] == 0


def test_idle_connection_past_keepalive_expiry_is_closed(
    ok_server: RawServer, clock: list[float]
) -> None:
    """An idle connection older than keepalive_expiry is closed on checkout, never reused."""
    with ConnectionPool(PoolConfig(keepalive_expiry=5.0)) as pool:
        pool.request("GET", ok_server.url + "/")
        clock[0] += 4.0
        pool.request("GET", ok_server.url + "/")
        clock[0] += 5.5
        pool.request("GET", ok_server.url + "/")
        stats = pool.get_stats()
    assert stats["expired_closed"] == 1
    assert stats["connections_created"] == 2
    assert stats["connection_reuses"] == 1


def test_connection_older_than_max_age_is_closed(ok_server: RawServer, clock: list[float]) -> None:
    """A busy connection is still retired once it is older than max_connection_age."""
    with ConnectionPool(PoolConfig(max_connection_age=10.0)) as pool:
        for _ in range(5):  # at t = 0, 3, 6, 9 (reused) and 12 (too old)
            pool.request("GET", ok_server.url + "/")
            clock[0] += 3.0
        stats = pool.get_stats()
    assert stats["expired_closed"] == 1
    assert stats["connections_created"] == 2


def test_server_closed_idle_connection_is_replaced(ok_server: RawServer) -> None:
    """An idle socket the server closed is detected at checkout and replaced, not used."""
    with ConnectionPool() as pool:
        pool.request("GET", ok_server.url + "/")
        for conn in list(ok_server._conns):
            conn.shutdown(socket.SHUT_RDWR)
        idle = pool.host_pool(ok_server.url).pool.queue[-1]
        for _ in range(200):  # wait (bounded) until the FIN has reached the idle socket
            if not idle.is_connected:
                break
            threading.Event().wait(0.005)
        assert pool.request("GET", ok_server.url + "/").status == 200
        stats = pool.get_stats()
    assert stats["dropped_closed"] == 1
    assert stats["stale_retries"] == 0
    assert stats["failed_requests"] == 0


def test_max_keepalive_closes_extra_idle_connections(ok_server: RawServer) -> None:
    """With max_keepalive=1, returning 3 connections keeps one idle and discards two."""
    with ConnectionPool(PoolConfig(max_connections=3, max_keepalive=1)) as pool:
        held = [pool.request("GET", ok_server.url + "/", stream=True) for _ in range(3)]
        for response in held:
            response.read()
        stats = pool.get_stats()
    assert stats["idle"] == 1
    assert stats["discarded"] == 2


def test_counters_add_up_under_64_threads(ok_server: RawServer) -> None:
    """64 threads x 25 requests: total = successful + failed, nothing left in use."""
    with ConnectionPool(PoolConfig(max_connections=16, pool_timeout=30.0)) as pool:

        def work(_: int) -> int:
            return sum(pool.request("GET", ok_server.url + "/").status == 200 for _ in range(25))

        with ThreadPoolExecutor(64) as ex:
            done = [f.result() for f in [ex.submit(work, i) for i in range(64)]]
        stats = pool.get_stats()
    assert sum(done) == 64 * 25
    assert stats["total_requests"] == 64 * 25
    assert stats["total_requests"] == stats["successful_requests"] + stats["failed_requests"]
    assert stats["in_use"] == 0 and stats["waiting"] == 0
    assert stats["peak_in_use"] <= 16
    assert stats["connections_created"] <= 16


def test_close_closes_idle_now_and_busy_on_return(ok_server: RawServer) -> None:
    """close() drops idle connections; a busy one closes when it comes back; then PoolClosed."""
    pool = ConnectionPool(PoolConfig(max_connections=2))
    pool.request("GET", ok_server.url + "/")
    busy = pool.request("GET", ok_server.url + "/", stream=True)
    conn = busy._raw._connection
    pool.close()
    assert pool.closed
    assert busy.read() == b'{"ok":true}'
    assert conn.sock is None
    with pytest.raises(exc.PoolClosed):
        pool.request("GET", ok_server.url + "/")
    assert pool.get_stats()["in_use"] == 0
    pool.close()  # idempotent


def test_connection_refused_is_connect_error() -> None:
    """Nothing listening: ConnectError, with urllib3's error only as the cause."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ConnectionPool() as pool:
        with pytest.raises(exc.ConnectError) as info:
            pool.request("GET", f"http://127.0.0.1:{port}/")
    assert info.value.retryable
    assert info.value.__cause__ is not None


def test_silent_server_hits_read_timeout() -> None:
    """A server that accepts and never answers raises ReadTimeout after read_timeout."""
    gate = threading.Event()
    with RawServer(lambda c, n: (read_request(c), gate.wait(5))) as server:
        with ConnectionPool(PoolConfig(read_timeout=0.1)) as pool:
            with pytest.raises(exc.ReadTimeout):
                pool.request("POST", server.url + "/", body=b"{}")
            stats = pool.get_stats()
            gate.set()
    assert stats["failed_requests"] == 1


def test_stalled_body_hits_read_timeout() -> None:
    """Headers then silence: reading the body raises ReadTimeout, not a hang."""
    gate = threading.Event()

    def behaviour(conn: socket.socket, _: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        gate.wait(5)

    with RawServer(behaviour) as server:
        with ConnectionPool(PoolConfig(read_timeout=0.1)) as pool:
            response = pool.request("GET", server.url + "/", stream=True)
            chunks = []
            with pytest.raises(exc.ReadTimeout):
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
            assert chunks == [b"hello"]
            gate.set()


def test_leaked_connection_is_reported_once(
    ok_server: RawServer, clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    """A connection held past leak_timeout shows in stats and is warned about once."""
    with ConnectionPool(PoolConfig(max_connections=2, leak_timeout=30.0)) as pool:
        held = pool.request("GET", ok_server.url + "/", stream=True)
        with caplog.at_level(logging.WARNING, logger="llmpool"):
            clock[0] += 31.0
            pool.request("GET", ok_server.url + "/")
            clock[0] += 1.5  # past the once-a-second throttle: checked again, not warned again
            pool.request("GET", ok_server.url + "/")
            leaked = pool.get_stats()["leaked_connections"]
        held.close()
    warnings = [r for r in caplog.records if "leak_timeout" in r.getMessage()]
    assert leaked == 1
    assert len(warnings) == 1


def test_requests_adapter_shares_the_pool(ok_server: RawServer) -> None:
    """A requests.Session mounted with PooledHTTPAdapter uses the pool's sockets and stats."""
    with ConnectionPool() as pool:
        pool.request("GET", ok_server.url + "/")
        session = requests.Session()
        session.mount("http://", PooledHTTPAdapter(pool))
        for _ in range(20):
            assert session.get(ok_server.url + "/").json() == {"ok": True}
        session.close()
        assert not pool.closed
        assert pool.request("GET", ok_server.url + "/").status == 200
        stats = pool.get_stats()
    assert stats["total_requests"] == 22
    assert stats["connections_created"] == 1
    assert ok_server.connections == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_child_after_fork_has_working_pool_and_no_inherited_sockets(ok_server: RawServer) -> None:
    """After fork the child opens its own connection and its statistics work."""
    with ConnectionPool() as pool:
        pool.request("GET", ok_server.url + "/")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                before = pool.get_stats()["connections_created"]
                ok = pool.request("GET", ok_server.url + "/").status == 200
                after = pool.get_stats()
                code = 0 if ok and after["connections_created"] == before + 1 else 2
                code = code or (0 if after["in_use"] == 0 else 3)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's socket is untouched by the child's close.
        assert pool.request("GET", ok_server.url + "/").status == 200
        assert pool.get_stats()["connections_created"] == 1


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[str, str]]:
    """An HTTPS server with a certificate from a throwaway CA; yields (url, ca_file)."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    holder: list[RawServer] = []

    def behaviour(conn: socket.socket, _: int) -> None:
        tls = context.wrap_socket(conn, server_side=True)
        holder[0].serve_forever_ok(tls)  # type: ignore[arg-type]

    server = RawServer(behaviour)
    holder.append(server)
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".pem", delete=False) as f:
        ca.cert_pem.write_to_path(f.name)
    try:
        yield f"https://localhost:{server.port}", f.name
    finally:
        server.close()
        os.unlink(f.name)


def test_https_with_private_ca_reuses_connections(tls_server: tuple[str, str]) -> None:
    """HTTPS to a server signed by a CA given in ca_certs works, verified, and reuses."""
    url, ca_file = tls_server
    with ConnectionPool(PoolConfig(ca_certs=ca_file)) as pool:
        for _ in range(20):
            assert pool.request("GET", url + "/").status == 200
        stats = pool.get_stats()
        context = pool._ssl_context
    assert stats["connections_created"] == 1
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED


def test_https_with_unknown_ca_is_tls_error(tls_server: tuple[str, str]) -> None:
    """Without the private CA, verification fails with TLSError (never silently)."""
    url, _ = tls_server
    with ConnectionPool() as pool:
        with pytest.raises(exc.TLSError) as info:
            pool.request("GET", url + "/")
    assert not info.value.retryable


def test_cap_below_expected_threads_warns_once_at_start(caplog: pytest.LogCaptureFixture) -> None:
    """A pool whose cap is below the threads expected to share it says so at start-up."""
    with caplog.at_level(logging.WARNING, logger="llmpool"):
        ConnectionPool(PoolConfig(max_connections=2, expected_threads=8)).close()
        ConnectionPool(PoolConfig(max_connections=8, expected_threads=8)).close()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "max_connections=2" in warnings[0] and "8 threads" in warnings[0]


def test_a_longer_pool_timeout_per_request_never_lengthens_the_configured_wait(
    ok_server: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """request(pool_timeout=30) waits at most the config's pool_timeout (it only shortens)."""
    waits: list[float | None] = []
    original = transport._TrackedPool._get_conn

    def recording(self: Any, timeout: float | None = None) -> Any:
        waits.append(timeout)
        return original(self, timeout)

    monkeypatch.setattr(transport._TrackedPool, "_get_conn", recording)
    with ConnectionPool(PoolConfig(pool_timeout=0.5)) as pool:
        pool.request("GET", ok_server.url + "/", pool_timeout=30.0)
        pool.request("GET", ok_server.url + "/", pool_timeout=0.1)
        pool.request("GET", ok_server.url + "/")
    assert waits == [0.5, 0.1, 0.5]


@pytest.mark.skipif(not sockets.ENABLED, reason="kernel timeouts are used on Linux only")
def test_plain_connections_are_timed_by_the_kernel(ok_server: RawServer) -> None:
    """A plain connection's socket is blocking with kernel timeouts (one system call per
    send or receive, no poll before it); a TLS one keeps Python's."""
    with ConnectionPool(PoolConfig(read_timeout=7.0)) as pool:
        pool.request("GET", ok_server.url + "/")
        host_pool = next(iter(pool._manager.pools._container.values()))
        conn = host_pool.pool.queue[-1]
        assert isinstance(conn.sock, sockets.KernelTimeoutSocket)
        assert conn.sock.gettimeout() == 7.0


def test_a_server_that_reads_nothing_times_the_send_out() -> None:
    """A large body to a server that never reads: the send times out (the kernel's send
    timeout) as a typed llmpool error, and the pool stays usable."""
    gate = threading.Event()

    def behaviour(conn: socket.socket, _: int) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        gate.wait(5)

    with RawServer(behaviour) as server:
        with ConnectionPool(PoolConfig(read_timeout=0.1, connect_timeout=0.1)) as pool:
            with pytest.raises(exc.ReadTimeout):
                pool.request("POST", server.url + "/", body=b"x" * (64 << 20))
            gate.set()
