"""Tracked urllib3 connections: age, use, one exchange's read budget, and
interim (1xx) replies skipped.

A connection records when it opened, when it was last used and how many
requests it served (the pool's expiry and reuse statistics read them); each
response is read through a socket wrapper whose every ``recv_into`` waits at
most what is left of the exchange's deadline; informational replies
(``103 Early Hints``...) are skipped before the final one. A plain TCP
connection's socket is blocking, timed by the kernel
(:mod:`llmpool.sockets`). No urllib3
exception is handled here (that is :mod:`llmpool.pool.transport`'s job).

A connection is confined to the thread that checked it out.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import time
from typing import Any, BinaryIO

from urllib3.connection import HTTPConnection, HTTPSConnection

from llmpool import sockets
from llmpool.pool.stats import HostStats

__all__ = ["TrackedHTTPConnection", "TrackedHTTPSConnection"]

#: The pool's monotonic clock for ages and idle times (tests patch it).
_now = time.monotonic


#: The clock of call deadlines (absolute ``time.monotonic()`` instants; not
#: the transport's patchable ``_now``, which tests move by hand).
_deadline_clock = time.monotonic

#: Informational (1xx) replies skipped before one final reply, at most.
_MAX_INTERIM = 32

#: The largest piece of a body read (and decoded) at a time.
_CHUNK = 65536

#: Bodies up to this size go out in one ``send`` with the request head.
_JOIN_HEAD_MAX = 65536


class _ReadBudget:
    """What bounds the reads of a connection's current exchange.

    ``deadline`` is an absolute ``time.monotonic()`` instant (None: none),
    set when the exchange starts and cleared when the connection goes back
    to the pool; ``read_timeout`` is the exchange's per-read timeout.
    Confined to the thread holding the connection.
    """

    __slots__ = ("deadline", "read_timeout")

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.read_timeout: float | None = None


class _DeadlineSocketIO(socket.SocketIO):
    """The raw reader under a response: each ``recv_into`` waits at most
    min(read timeout, time left before the deadline), and fails at once with
    ``socket.timeout`` once the deadline has passed."""

    def __init__(self, sock: socket.socket, budget: _ReadBudget) -> None:
        super().__init__(sock, "rb")
        self._llm_sock = sock
        self._llm_budget = budget

    def readinto(self, b: Any) -> int | None:
        budget = self._llm_budget
        deadline = budget.deadline
        if deadline is not None:
            left = deadline - _deadline_clock()
            if left <= 0:
                raise TimeoutError("the call's deadline has passed")
            limit = budget.read_timeout
            want = left if limit is None or left < limit else limit
            sock = self._llm_sock
            # On a Python-timed (TLS) socket settimeout() releases the GIL for a
            # system call: skip it while the read timeout, already set, is nearer.
            if want != sock.gettimeout():
                sock.settimeout(want)
        return super().readinto(b)


class _SocketFile:
    """Hands ``http.client.HTTPResponse.__init__`` a deadline-aware file for *sock*."""

    __slots__ = ("budget", "sock")

    def __init__(self, sock: Any, budget: _ReadBudget) -> None:
        self.sock = sock
        self.budget = budget

    def makefile(self, mode: str) -> BinaryIO:
        sock = self.sock
        if not isinstance(sock, socket.socket):  # e.g. TLS in TLS: no deadline per read
            return sock.makefile(mode)  # type: ignore[no-any-return]
        raw = _DeadlineSocketIO(sock, self.budget)
        sock._io_refs += 1  # type: ignore[attr-defined]  # as socket.makefile does
        return io.BufferedReader(raw, io.DEFAULT_BUFFER_SIZE)


class _FinalResponse(http.client.HTTPResponse):
    """An ``http.client`` response that skips every informational (1xx) reply.

    ``http.client`` skips only ``100 Continue``: a ``103 Early Hints`` would be
    taken as the final reply (with no body) and the real one left unread on a
    kept-alive socket, to be read as the *next* request's answer. A ``101``
    is final, and its connection is never reused.
    """

    def __init__(
        self,
        sock: Any,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
        *,
        budget: _ReadBudget,
    ) -> None:
        super().__init__(_SocketFile(sock, budget), debuglevel, method, url)  # type: ignore[arg-type]

    def _read_status(self) -> tuple[str, int, str]:
        for _ in range(_MAX_INTERIM + 1):  # the interim replies, then the final one
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 100 <= status < 200 or status == 101:
                return version, status, reason
            _skip_header_block(self.fp)
        raise http.client.HTTPException(f"more than {_MAX_INTERIM} informational replies")

    def begin(self) -> None:
        super().begin()
        if self.status == 101:  # the peer now speaks another protocol
            self.will_close = True


def _skip_header_block(fp: Any) -> None:
    """Read the header lines of an informational reply, up to the blank line."""
    for _ in range(101):  # http.client's own limit: 100 header lines
        line = fp.readline(65537)
        if len(line) > 65536:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return
    raise http.client.HTTPException("got more than 100 headers")


class _TrackedConnection:
    """Mixin for urllib3 connections: opening time, requests served, stats,
    1xx skipping and deadline-bounded reads."""

    llm_stats: HostStats | None = None
    llm_opened = 0.0
    llm_last_used = 0.0
    llm_served = 0
    llm_responded = False  # a status line arrived in the current exchange
    llm_waited = 0.0  # seconds the current exchange waited to check it out
    llm_leak_warned = False
    llm_response: Any = None  # the response of the current exchange, until returned
    llm_budget: _ReadBudget
    #: While a request is sent: None (send as asked), b"" (hold the head), the head.
    _llm_held: bytes | None = None
    timeout: Any
    sock: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        budget = self.llm_budget = _ReadBudget()
        # http.client builds each response with self.response_class(sock, method=...):
        # this connection's responses skip 1xx replies and read within its budget.
        self.__dict__["response_class"] = functools.partial(_FinalResponse, budget=budget)

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        # a plain TCP socket: timed by the kernel (fewer GIL releases per call)
        self.sock = sockets.adopt(self.sock)
        self.llm_opened = self.llm_last_used = _now()
        self.llm_served = 0
        self.llm_leak_warned = False
        if self.llm_stats is not None:
            self.llm_stats.count("connections_created")

    def request(
        self, method: str, url: str, body: Any = None, headers: Any = None, **kwargs: Any
    ) -> None:
        """Send a request; a small ``bytes`` body goes out in one ``send`` with
        the head (http.client sends them apart: two system calls, each a
        release of the GIL, and two packets with TCP_NODELAY). The bytes on
        the wire are the same."""
        if type(body) is bytes and 0 < len(body) <= _JOIN_HEAD_MAX:
            self._llm_held = b""
            try:
                super().request(method, url, body, headers, **kwargs)  # type: ignore[misc]
            finally:
                held, self._llm_held = self._llm_held, None
            if held:  # nothing followed the head (cannot happen with a body; kept safe)
                self.send(held)
        else:
            super().request(method, url, body, headers, **kwargs)  # type: ignore[misc]
        self.llm_served += 1

    def send(self, data: Any) -> None:
        held = self._llm_held
        if held is None:
            super().send(data)  # type: ignore[misc]
        elif not held and isinstance(data, bytes):
            self._llm_held = data  # the head: wait for the body
        else:
            self._llm_held = None
            if isinstance(data, bytes):
                super().send(held + data)  # type: ignore[misc]
            else:
                if held:
                    super().send(held)  # type: ignore[misc]
                super().send(data)  # type: ignore[misc]

    def getresponse(self) -> Any:
        # urllib3 has just set self.timeout to this exchange's read timeout.
        timeout = self.timeout
        self.llm_budget.read_timeout = timeout if isinstance(timeout, (int, float)) else None
        response = super().getresponse()  # type: ignore[misc]
        self.llm_responded = True
        self.llm_response = response
        return response


class TrackedHTTPConnection(_TrackedConnection, HTTPConnection):
    """An HTTP connection that records its age and use."""


class TrackedHTTPSConnection(_TrackedConnection, HTTPSConnection):
    """An HTTPS connection that records its age and use."""
