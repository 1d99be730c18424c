"""MockLLMServer: a real HTTP/1.1 keep-alive server on loopback, with fault injection."""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import attrs

from llmpool.exceptions import ConfigError
from llmpool.testing.faults import Fault, parse_faults
from llmpool.testing.injection import FaultInjector
from llmpool.testing.recording import RecordedRequest, Recorder
from llmpool.testing.serving import Connection, Serving
from llmpool.testing.settings import DEFAULT_REPLY, MockSettings

__all__ = ["MockLLMServer"]

log = logging.getLogger(__name__)


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
        self._serving = Serving(
            settings=lambda: self._settings,
            injector=self._injector,
            recorder=self._recorder,
            forget=self._forget,
        )
        # Guards _settings (rebinds), _conns, _next_id, _opened and the lifecycle fields.
        self._lock = threading.Lock()
        self._conns: dict[int, Connection] = {}
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
            conn = Connection(self._next_id, sock)
            self._conns[conn.id] = conn
        conn.thread = threading.Thread(
            target=self._serving.serve,
            args=(conn, self._stopping),
            name=f"llmpool-mock-conn-{self.port}-{conn.id}",
            daemon=True,
        )
        conn.thread.start()

    def _forget(self, conn: Connection) -> None:
        """A connection's thread is done with it."""
        with self._lock:
            self._conns.pop(conn.id, None)
