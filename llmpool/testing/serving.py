"""How MockLLMServer serves one connection: read a request, choose a fault, record, answer.

Each accepted connection gets a daemon thread running :meth:`Serving.serve`;
the server's settings are read once per request (``configure()`` applies to
the next one), faults come from the shared
:class:`~llmpool.testing.injection.FaultInjector`, and every request lands in
the shared :class:`~llmpool.testing.recording.Recorder`.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import BinaryIO, cast

from llmpool.testing.exchange import Close, Pause, Send, Stall, Step, plan
from llmpool.testing.faults import Fault
from llmpool.testing.http11 import BadRequest, HttpRequest, read_body, read_head
from llmpool.testing.injection import FAULT_HEADER, FaultInjector
from llmpool.testing.recording import RecordedRequest, Recorder
from llmpool.testing.settings import MockSettings

__all__ = ["Connection", "Serving"]

log = logging.getLogger("llmpool.testing.server")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BAD_BODY = b'{"error": {"message": "Malformed HTTP request.", "type": "invalid_request_error"}}'
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BAD_BODY), _BAD_BODY)
)


class Connection:
    """One accepted TCP connection; confined to its thread, except :meth:`shutdown`."""

    def __init__(self, conn_id: int, sock: socket.socket) -> None:
        self.id = conn_id
        self.sock = sock
        self.served = 0
        self.reset = False
        self.thread: threading.Thread | None = None

    def shutdown(self) -> None:
        """Wake the thread blocked on this socket (called by ``stop()``)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self, rfile: BinaryIO | None) -> None:
        """Close the socket: an RST when ``reset`` is set, a FIN otherwise."""
        try:
            if rfile is not None:
                rfile.close()
            if self.reset:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        finally:
            self.sock.close()


class Serving:
    """Serves connections for one MockLLMServer, one thread per connection.

    Thread-safe: it keeps no state of its own; *settings* returns the
    server's current immutable settings, *injector* and *recorder* lock
    themselves, and *forget* (the server's) drops a finished connection.
    """

    def __init__(
        self,
        *,
        settings: Callable[[], MockSettings],
        injector: FaultInjector,
        recorder: Recorder,
        forget: Callable[[Connection], None],
    ) -> None:
        self._settings = settings
        self._injector = injector
        self._recorder = recorder
        self._forget = forget

    def serve(self, conn: Connection, stopping: threading.Event) -> None:
        """Serve *conn* until it closes or *stopping* is set (a connection thread's body)."""
        rfile: BinaryIO | None = None
        try:
            if isinstance(conn.sock, ssl.SSLSocket):
                conn.sock.do_handshake()
            rfile = cast(BinaryIO, conn.sock.makefile("rb", buffering=65536))
            while not stopping.is_set() and self._serve_one(conn, rfile, stopping):
                pass
        except BadRequest as exc:
            log.debug("mock connection %d: bad request: %s", conn.id, exc)
            self._send_quietly(conn, _BAD_REQUEST)
        except OSError as exc:
            log.debug("mock connection %d: %s", conn.id, exc)
        except Exception:  # a bug here must not kill the test run with a thread warning
            log.exception("mock connection %d failed", conn.id)
        finally:
            conn.close(rfile)
            self._forget(conn)

    def _serve_one(self, conn: Connection, rfile: BinaryIO, stopping: threading.Event) -> bool:
        """Read and answer one request; False when the connection is done."""
        request = self._read_request(conn, rfile, self._settings().idle_timeout)
        if request is None:
            return False
        settings = self._settings()  # read after the request: configure() applies to it
        conn.served += 1
        fault = self._fault_for(conn, request, settings)
        self._record(conn, request, fault)
        steps = plan(request, settings, fault, keep_alive=request.keep_alive)
        limit = settings.close_after_requests
        if limit is not None and conn.served >= limit and not isinstance(steps[-1], Close):
            steps.append(Close())  # silently: the response did not say Connection: close
        return self._execute(conn, steps, stopping)

    def _read_request(
        self, conn: Connection, rfile: BinaryIO, idle_timeout: float | None
    ) -> HttpRequest | None:
        if idle_timeout is not None:
            conn.sock.settimeout(idle_timeout)
        try:
            request = read_head(rfile)
        except TimeoutError:
            log.debug("mock connection %d: idle timeout, closing", conn.id)
            return None
        finally:
            if idle_timeout is not None:
                conn.sock.settimeout(None)
        if request is None:
            return None
        if request.headers.get("expect", "").lower() == "100-continue":
            conn.sock.sendall(_CONTINUE)
        request.body = read_body(rfile, request)
        return request

    def _fault_for(
        self, conn: Connection, request: HttpRequest, settings: MockSettings
    ) -> Fault | None:
        drop_after = settings.drop_after_requests
        if drop_after is not None and conn.served > drop_after:
            return Fault.drop()
        return self._injector.choose(request.headers.get(FAULT_HEADER), settings)

    def _record(self, conn: Connection, request: HttpRequest, fault: Fault | None) -> None:
        try:
            decoded = request.json() if request.body else None
        except ValueError:
            decoded = None
        self._recorder.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=request.query,
                headers=request.headers,
                body=request.body,
                json=decoded,
                connection_id=conn.id,
                index_on_connection=conn.served,
                timestamp=time.monotonic(),
                fault=fault,
            )
        )
        log.debug(
            "mock %s %s connection=%d #%d fault=%s",
            request.method,
            request.target,
            conn.id,
            conn.served,
            fault,
        )

    def _execute(self, conn: Connection, steps: list[Step], stopping: threading.Event) -> bool:
        """Perform *steps*; False when they closed the connection or the server stops."""
        for step in steps:
            if isinstance(step, Send):
                conn.sock.sendall(step.data)
            elif isinstance(step, Pause):
                if stopping.wait(step.seconds):
                    return False
            elif isinstance(step, Stall):
                self._stall(conn, stopping)
            elif isinstance(step, Close):
                conn.reset = step.reset
                return False
        return True

    def _stall(self, conn: Connection, stopping: threading.Event) -> None:
        """Wait until the client closes the connection or ``stop()`` shuts it down."""
        with selectors.DefaultSelector() as selector:
            selector.register(conn.sock, selectors.EVENT_READ)
            selector.select()
        try:
            if conn.sock.recv(1, socket.MSG_PEEK):
                stopping.wait()  # the client spoke again: stay silent until stop()
        except (OSError, ValueError):  # ValueError: TLS sockets cannot peek; just close
            pass

    @staticmethod
    def _send_quietly(conn: Connection, data: bytes) -> None:
        with contextlib.suppress(OSError):
            conn.sock.sendall(data)
