"""MockLLMServer: a real HTTP/1.1 keep-alive server on loopback, with fault injection."""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, BinaryIO, Self, cast

import attrs

from llmpool.exceptions import ConfigError
from llmpool.testing.exchange import Close, Pause, Send, Stall, Step, plan
from llmpool.testing.faults import Fault, parse_faults
from llmpool.testing.http11 import BadRequest, HttpRequest, read_body, read_head
from llmpool.testing.injection import FAULT_HEADER, FaultInjector
from llmpool.testing.recording import RecordedRequest, Recorder
from llmpool.testing.settings import DEFAULT_REPLY, MockSettings

__all__ = ["MockLLMServer"]

log = logging.getLogger(__name__)

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BAD_BODY = b'{"error": {"message": "Malformed HTTP request.", "type": "invalid_request_error"}}'
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BAD_BODY), _BAD_BODY)
)


class _Connection:
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


class MockLLMServer:
    """An OpenAI- and Anthropic-compatible HTTP/1.1 server on 127.0.0.1, for tests.

    It answers ``POST /v1/chat/completions``, ``/v1/completions``,
    ``/v1/embeddings``, ``/v1/messages`` (JSON, or SSE with ``"stream":
    true``) and ``GET /v1/models`` with deterministic replies; records every
    request; and misbehaves on demand: scripted faults (:meth:`inject`, the
    ``X-Mock-Fault`` request header) and random ones (``fault_rate`` with a
    seeded RNG). Use it as a context manager, or call :meth:`start` and
    :meth:`stop`.

    Thread-safe: any thread may call any method while connection threads
    serve requests (one daemon thread per connection, named
    ``llmpool-mock-...``). :meth:`configure` swaps an immutable
    :class:`~llmpool.testing.MockSettings` that each request reads once.

    Keyword arguments are :class:`~llmpool.testing.MockSettings` fields,
    plus ``host``, ``port`` (0: a free port), ``max_recorded`` (how many
    requests :attr:`requests` keeps, oldest dropped first) and
    ``ssl_context`` (a server-side ``ssl.SSLContext``: serve HTTPS; the TLS
    handshake happens in the connection's thread).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        reply: str = DEFAULT_REPLY,
        echo: bool = False,
        stream_chunks: int | None = None,
        latency: float = 0.0,
        chunk_latency: float = 0.0,
        embedding_dim: int = 8,
        models: Iterable[str] = ("mock-model",),
        tool_call: str | None = None,
        tool_arguments: str | Mapping[str, Any] = "{}",
        fault_rate: float = 0.0,
        random_faults: str | Iterable[Fault | str] | None = None,
        seed: int | None = None,
        close_after_requests: int | None = None,
        drop_after_requests: int | None = None,
        idle_timeout: float | None = None,
        max_recorded: int = 10_000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        options: dict[str, Any] = {} if random_faults is None else {"random_faults": random_faults}
        self._settings = MockSettings(
            reply=reply,
            echo=echo,
            stream_chunks=stream_chunks,
            latency=latency,
            chunk_latency=chunk_latency,
            embedding_dim=embedding_dim,
            models=models,
            tool_call=tool_call,
            tool_arguments=tool_arguments,
            fault_rate=fault_rate,
            seed=seed,
            close_after_requests=close_after_requests,
            drop_after_requests=drop_after_requests,
            idle_timeout=idle_timeout,
            **options,
        )
        self._host = host
        self._requested_port = port
        self._ssl_context = ssl_context
        self._address: tuple[str, int] | None = None
        self._recorder = Recorder(max_recorded)
        self._injector = FaultInjector(seed)
        # Guards _settings (rebinds), _conns, _next_id, _opened and the lifecycle fields.
        self._lock = threading.Lock()
        self._conns: dict[int, _Connection] = {}
        self._next_id = 0
        self._opened = 0
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._waker: tuple[socket.socket, socket.socket] | None = None
        self._acceptor: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind the listening socket and start accepting; returns self. A no-op when running."""
        with self._lock:
            if self._listener is not None:
                return self
            listener = socket.create_server((self._host, self._requested_port), backlog=128)
            self._listener = listener
            self._address = listener.getsockname()[:2]
            self._waker = socket.socketpair()
            self._stopping = threading.Event()
            self._acceptor = threading.Thread(
                target=self._accept_loop,
                args=(listener, self._waker[0], self._stopping),
                name=f"llmpool-mock-accept-{self.port}",
                daemon=True,
            )
        self._acceptor.start()
        log.debug("mock server listening on %s", self.base_url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; join all threads within *timeout*.

        Latency pauses and stalled streams are cut short. Idempotent.
        """
        with self._lock:
            listener, waker, acceptor = self._listener, self._waker, self._acceptor
            self._listener = self._waker = self._acceptor = None
        if listener is None or waker is None or acceptor is None:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        waker[1].send(b"x")
        acceptor.join(timeout)
        listener.close()
        with self._lock:
            conns = list(self._conns.values())
        for conn in conns:
            conn.shutdown()
        for conn in conns:
            if conn.thread is not None:
                conn.thread.join(max(0.0, deadline - time.monotonic()))
        for end in waker:
            end.close()
        log.debug("mock server on port %s stopped", self.port)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self._host}:{self._address[1]}" if self._address else "not started"
        return f"<MockLLMServer {where}>"

    # ------------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (known once started)."""
        if self._address is None:
            raise RuntimeError("MockLLMServer is not started: call start() or use `with`")
        return self._address[1]

    @property
    def origin(self) -> str:
        """``http://HOST:PORT`` (``https`` with TLS): the base URL Anthropic SDKs expect."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``: the base URL OpenAI-style clients expect."""
        return self.origin + "/v1"

    def url(self, path: str) -> str:
        """The absolute URL of *path*, e.g. ``url("/v1/models")``."""
        return self.origin + path

    # ------------------------------------------------------------------ behaviour

    @property
    def settings(self) -> MockSettings:
        """The current settings (an immutable snapshot)."""
        return self._settings

    def configure(self, **changes: Any) -> MockSettings:
        """Change settings from the next request on; returns the new snapshot.

        Takes :class:`~llmpool.testing.MockSettings` fields, e.g.
        ``configure(latency=0.2, fault_rate=0.5, seed=7)``. Setting ``seed``
        restarts the random fault sequence.
        """
        unknown = set(changes) - {field.name for field in attrs.fields(MockSettings)}
        if unknown:
            raise ConfigError(f"unknown mock server setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            self._settings = attrs.evolve(self._settings, **changes)
            settings = self._settings
        if "seed" in changes:
            self._injector.reseed(settings.seed)
        return settings

    def inject(self, fault: Fault | str, count: int = 1) -> None:
        """Queue *fault* (a :class:`Fault` or its text form, ``;`` for several) for the next
        *count* requests, after the faults already queued."""
        faults = parse_faults(fault) if isinstance(fault, str) else (fault,)
        self._injector.inject([f for _ in range(count) for f in faults])

    @property
    def pending_faults(self) -> tuple[Fault, ...]:
        """The scripted faults not yet used, next first."""
        return self._injector.pending()

    def clear_faults(self) -> None:
        """Drop every scripted fault not yet used."""
        self._injector.clear()

    # ------------------------------------------------------------------ recording

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the recorded requests, oldest first (at most ``max_recorded``)."""
        return self._recorder.snapshot()

    @property
    def request_count(self) -> int:
        """Requests received since the start or :meth:`clear`, including ones no longer kept."""
        return self._recorder.total

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since the start or :meth:`clear`."""
        with self._lock:
            return self._opened

    @property
    def connections_active(self) -> int:
        """TCP connections open right now."""
        with self._lock:
            return len(self._conns)

    def clear(self) -> None:
        """Forget recorded requests and reset :attr:`connections_opened` to 0."""
        self._recorder.clear()
        with self._lock:
            self._opened = 0

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Block until *count* requests were received; False if *timeout* passed first."""
        return self._recorder.wait_for(count, timeout)

    # ------------------------------------------------------------------ accepting

    def _accept_loop(
        self, listener: socket.socket, wake: socket.socket, stopping: threading.Event
    ) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not stopping.is_set():
                ready = {key.fileobj for key, _ in selector.select()}
                if wake in ready or stopping.is_set():
                    return
                try:
                    sock, _ = listener.accept()
                except OSError:
                    continue
                self._spawn(sock)

    def _spawn(self, sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:  # the handshake waits for the connection thread
                sock = self._ssl_context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
        except OSError as exc:
            log.debug("mock server: dropping a new connection: %s", exc)
            sock.close()
            return
        with self._lock:
            self._next_id += 1
            self._opened += 1
            conn = _Connection(self._next_id, sock)
            self._conns[conn.id] = conn
        conn.thread = threading.Thread(
            target=self._serve,
            args=(conn,),
            name=f"llmpool-mock-conn-{self.port}-{conn.id}",
            daemon=True,
        )
        conn.thread.start()

    # ------------------------------------------------------------------ serving

    def _serve(self, conn: _Connection) -> None:
        rfile: BinaryIO | None = None
        try:
            if isinstance(conn.sock, ssl.SSLSocket):
                conn.sock.do_handshake()
            rfile = cast(BinaryIO, conn.sock.makefile("rb", buffering=65536))
            while not self._stopping.is_set() and self._serve_one(conn, rfile):
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
            with self._lock:
                self._conns.pop(conn.id, None)

    def _serve_one(self, conn: _Connection, rfile: BinaryIO) -> bool:
        """Read and answer one request; False when the connection is done."""
        request = self._read_request(conn, rfile, self._settings.idle_timeout)
        if request is None:
            return False
        settings = self._settings  # read after the request: configure() applies to it
        conn.served += 1
        fault = self._fault_for(conn, request, settings)
        self._record(conn, request, fault)
        steps = plan(request, settings, fault, keep_alive=request.keep_alive)
        limit = settings.close_after_requests
        if limit is not None and conn.served >= limit and not isinstance(steps[-1], Close):
            steps.append(Close())  # silently: the response did not say Connection: close
        return self._execute(conn, steps)

    def _read_request(
        self, conn: _Connection, rfile: BinaryIO, idle_timeout: float | None
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
        self, conn: _Connection, request: HttpRequest, settings: MockSettings
    ) -> Fault | None:
        drop_after = settings.drop_after_requests
        if drop_after is not None and conn.served > drop_after:
            return Fault.drop()
        return self._injector.choose(request.headers.get(FAULT_HEADER), settings)

    def _record(self, conn: _Connection, request: HttpRequest, fault: Fault | None) -> None:
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

    def _execute(self, conn: _Connection, steps: list[Step]) -> bool:
        """Perform *steps*; False when they closed the connection or the server stops."""
        for step in steps:
            if isinstance(step, Send):
                conn.sock.sendall(step.data)
            elif isinstance(step, Pause):
                if self._stopping.wait(step.seconds):
                    return False
            elif isinstance(step, Stall):
                self._stall(conn)
            elif isinstance(step, Close):
                conn.reset = step.reset
                return False
        return True

    def _stall(self, conn: _Connection) -> None:
        """Wait until the client closes the connection or ``stop()`` shuts it down."""
        with selectors.DefaultSelector() as selector:
            selector.register(conn.sock, selectors.EVENT_READ)
            selector.select()
        try:
            if conn.sock.recv(1, socket.MSG_PEEK):
                self._stopping.wait()  # the client spoke again: stay silent until stop()
        except (OSError, ValueError):  # ValueError: TLS sockets cannot peek; just close
            pass

    @staticmethod
    def _send_quietly(conn: _Connection, data: bytes) -> None:
        with contextlib.suppress(OSError):
            conn.sock.sendall(data)
