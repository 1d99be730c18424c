"""Plain TCP sockets timed by the kernel (llmpool/sockets.py), on loopback."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest

from llmpool import sockets
from llmpool.sockets import KernelTimeoutSocket, adopt

linux_only = pytest.mark.skipif(
    not sockets.ENABLED, reason="kernel timeouts are used on Linux only"
)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback TCP pair: (ours, adopted; theirs)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        ours = socket.create_connection(server.getsockname(), timeout=5.0)
        theirs, _ = server.accept()
    adopted = adopt(ours)
    yield adopted, theirs
    adopted.close()
    theirs.close()


@linux_only
def test_a_plain_tcp_socket_is_adopted_blocking_with_its_timeout(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    assert isinstance(ours, KernelTimeoutSocket)
    assert ours.gettimeout() == 5.0
    assert socket.socket.gettimeout(ours) is None  # blocking underneath
    ours.sendall(b"ping")
    assert theirs.recv(4) == b"ping"
    theirs.sendall(b"pong")
    assert ours.recv(4) == b"pong"


def test_other_sockets_are_left_as_they_are() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert adopt(udp) is udp
    finally:
        udp.close()
    context = ssl.create_default_context()
    with socket.create_server(("127.0.0.1", 0)) as server:
        raw = socket.create_connection(server.getsockname())
        wrapped = context.wrap_socket(raw, server_hostname="x", do_handshake_on_connect=False)
        try:
            assert adopt(wrapped) is wrapped
        finally:
            wrapped.close()


@linux_only
def test_a_receive_that_times_out_is_a_timeout_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Nothing arrives: the kernel's receive timeout ends recv and recv_into with
    TimeoutError (socket.timeout), as a Python timeout would; the socket still works."""
    ours, theirs = pair
    ours.settimeout(0.05)
    with pytest.raises(TimeoutError):
        ours.recv(10)
    with pytest.raises(socket.timeout):
        ours.recv_into(bytearray(10))
    theirs.sendall(b"late")
    assert ours.recv(4) == b"late"


@linux_only
def test_a_send_that_times_out_is_a_timeout_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The peer reads nothing: once the buffers are full, sendall ends with TimeoutError."""
    ours, _ = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.settimeout(0.05)
    with pytest.raises(TimeoutError):
        ours.sendall(b"x" * (64 << 20))
    with pytest.raises(TimeoutError):
        for _ in range(1 << 16):
            ours.send(b"x" * 65536)


@linux_only
def test_the_kernel_is_told_only_when_a_timeout_changes(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """urllib3 sets the same timeout twice per request: the options are set once per
    change and direction, on the next send or receive."""
    ours, theirs = pair
    calls: list[int] = []
    real = socket.socket.setsockopt

    def counting(self: socket.socket, level: int, option: int, value: object) -> None:
        calls.append(option)
        real(self, level, option, value)  # type: ignore[call-overload]

    monkeypatch.setattr(KernelTimeoutSocket, "setsockopt", counting)
    for _ in range(3):
        ours.settimeout(2.0)
        ours.sendall(b"a")
        ours.settimeout(2.0)
        assert theirs.recv(1) == b"a"
        theirs.sendall(b"b")
        assert ours.recv(1) == b"b"
    assert calls == [socket.SO_SNDTIMEO, socket.SO_RCVTIMEO]
    ours.settimeout(None)
    ours.sendall(b"c")
    assert calls[-1] == socket.SO_SNDTIMEO and len(calls) == 3


def test_timevals() -> None:
    """Seconds as the kernel reads them; None waits forever; never a zero that would."""
    import struct

    assert struct.unpack("ll", sockets._timeval(None)) == (0, 0)
    assert struct.unpack("ll", sockets._timeval(2.5)) == (2, 500000)
    assert struct.unpack("ll", sockets._timeval(0.0)) == (0, 1)
    assert struct.unpack("ll", sockets._timeval(1e-9)) == (0, 1)


@linux_only
def test_the_timeout_bounds_a_whole_sendall(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A peer that keeps reading, slowly: each send makes progress, but the whole
    sendall is bounded by the timeout, as with Python's timeouts (a kernel timeout
    per send alone would let this 8 MiB body through, 64 KiB every 5 ms)."""
    import threading
    import time

    ours, theirs = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    stop = threading.Event()
    received = [0]

    def read_slowly() -> None:
        theirs.settimeout(1.0)
        while not stop.is_set():
            try:
                got = theirs.recv(65536)
            except OSError:
                return
            if not got:
                return
            received[0] += len(got)
            time.sleep(0.005)

    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    ours.settimeout(0.2)
    body = b"x" * (8 << 20)
    with pytest.raises(TimeoutError):
        ours.sendall(body)
    stop.set()
    reader.join(5)
    assert 0 < received[0] < len(body)
    with pytest.raises(TimeoutError):  # memoryviews of wider items count bytes, not items
        ours.sendall(memoryview(bytearray(8 << 20)).cast("I"))
