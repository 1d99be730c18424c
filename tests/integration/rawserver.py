"""Raw-socket fault servers on 127.0.0.1 for transport tests.

Each server runs ``behaviour(conn, number)`` in a thread per accepted
connection (*number* counts connections from 0), so a test scripts exactly
what the peer does: answer, close, reset, stall.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


def read_request(conn: socket.socket) -> bytes | None:
    """Read one HTTP request (headers and Content-Length body); None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = conn.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return head + b"\r\n\r\n" + rest


def reset(conn: socket.socket) -> None:
    """Close with RST (SO_LINGER 0)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class RawServer:
    """A loopback server whose connections run a scripted behaviour."""

    def __init__(self, behaviour: Callable[[socket.socket, int], None]) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.requests = 0
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, name="rawserver", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.stopping.is_set():
                conn.close()
                return
            with self._lock:
                number = self.connections
                self.connections += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._run, args=(conn, number), daemon=True)
            t.start()
            self._threads.append(t)

    def _run(self, conn: socket.socket, number: int) -> None:
        with contextlib.suppress(OSError):
            self.behaviour(conn, number)
        with contextlib.suppress(OSError):
            conn.close()

    def serve_forever_ok(self, conn: socket.socket) -> None:
        """Answer every request on *conn* with 200 until the peer closes."""
        while read_request(conn) is not None:
            with self._lock:
                self.requests += 1
            conn.sendall(OK)

    def close(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):  # wake the blocked accept()
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()
        for t in self._threads:
            t.join(timeout=2)
        self._acceptor.join(timeout=2)

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
