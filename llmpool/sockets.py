"""Plain TCP sockets whose timeouts the kernel keeps.

A Python socket with a timeout is non-blocking underneath: before each
``send`` or ``recv`` CPython waits in ``poll()``, and every ``settimeout``
switches the descriptor's mode with an ``ioctl``. Each of those system calls
releases the GIL, so a call over a socket with a timeout gives its thread's
turn away four or five more times than one over a blocking socket (what raw
urllib3 uses when no timeout is set): under threads each is a chance of a
switch.

:class:`KernelTimeoutSocket` keeps the socket blocking and hands the timeout
to the kernel instead (``SO_SNDTIMEO`` and ``SO_RCVTIMEO``): a send or a
receive is one system call, and it fails after the same time, as
:class:`TimeoutError` (``socket.timeout``), exactly as a Python timeout
would. The options are set only when the timeout in force for that
direction changes, with ``setsockopt`` (which keeps the GIL). As in Python,
the timeout bounds a whole ``sendall``: what one ``send`` could not take is
sent with the send timeout shortened to what is left. Linux only
(where ``struct timeval`` is two C longs); elsewhere, and for TLS sockets,
connections keep Python's own timeouts.

Used by the pool's plain HTTP connections (:mod:`llmpool.pool.connections`)
and the Redis backend's connections. A socket is confined to the thread
holding its connection.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from typing import Any

__all__ = ["ENABLED", "KernelTimeoutSocket", "adopt"]

#: Whether plain connections use kernel timeouts on this platform.
ENABLED = sys.platform.startswith("linux")

#: The shortest timeout the kernel is given (0 there would mean "never").
_SHORTEST = 1e-6

_UNSET = object()


def _timeval(seconds: float | None) -> bytes:
    """*seconds* as a ``struct timeval`` (None: wait forever)."""
    if seconds is None:
        return struct.pack("ll", 0, 0)
    seconds = max(seconds, _SHORTEST)
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000) or (0 if whole else 1))


class KernelTimeoutSocket(socket.socket):
    """A blocking TCP socket timed by the kernel (see the module docstring).

    ``settimeout``/``gettimeout`` keep Python's meaning (seconds, None for
    none); a send or receive that times out raises :class:`TimeoutError`.
    A timeout of 0 (non-blocking in Python) is taken as the shortest wait.
    """

    __slots__ = ("llm_received", "llm_sent", "llm_timeout")

    llm_timeout: float | None
    llm_sent: Any
    llm_received: Any

    def settimeout(self, value: float | None) -> None:
        # The kernel options follow on the next send or receive: the same
        # timeout set again (twice per request by urllib3) costs nothing.
        self.llm_timeout = value

    def gettimeout(self) -> float | None:
        return self.llm_timeout

    def _send_timeout(self) -> None:
        """Give the kernel the send timeout in force (the callers saw it change)."""
        self.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self.llm_timeout))
        self.llm_sent = self.llm_timeout

    def _receive_timeout(self) -> None:
        """Give the kernel the receive timeout in force (the callers saw it change)."""
        self.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(self.llm_timeout))
        self.llm_received = self.llm_timeout

    def sendall(self, data: Any, flags: int = 0) -> None:
        if self.llm_sent != self.llm_timeout:
            self._send_timeout()
        started = time.monotonic()
        try:
            sent = super().send(data, flags)  # the common case: all of it at once
            size = len(data) if type(data) is bytes else memoryview(data).nbytes
            if sent < size:
                self._send_rest(memoryview(data).cast("B")[sent:], flags, started)
        except BlockingIOError:  # the kernel's send timeout
            raise TimeoutError("timed out") from None

    def _send_rest(self, rest: memoryview, flags: int, started: float) -> None:
        """Send *rest*, the whole ``sendall`` bounded by the timeout from *started*."""
        timeout = self.llm_timeout
        while rest:
            if timeout is not None:
                left = started + timeout - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                self.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(left))
                self.llm_sent = _UNSET  # set again on the next send
            rest = rest[super().send(rest, flags) :]

    def send(self, data: Any, flags: int = 0) -> int:
        if self.llm_sent != self.llm_timeout:
            self._send_timeout()
        try:
            return super().send(data, flags)
        except BlockingIOError:
            raise TimeoutError("timed out") from None

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if self.llm_received != self.llm_timeout:
            self._receive_timeout()
        try:
            return super().recv_into(buffer, nbytes, flags)
        except BlockingIOError:  # the kernel's receive timeout
            raise TimeoutError("timed out") from None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self.llm_received != self.llm_timeout:
            self._receive_timeout()
        try:
            return super().recv(bufsize, flags)
        except BlockingIOError:
            raise TimeoutError("timed out") from None


def adopt(sock: Any) -> Any:
    """*sock* as a :class:`KernelTimeoutSocket` (the same descriptor, its
    options and timeout kept), or *sock* itself when it is not a plain TCP
    socket or the platform is not Linux."""
    if not ENABLED or type(sock) is not socket.socket or sock.type != socket.SOCK_STREAM:
        return sock
    timeout = sock.gettimeout()
    adopted = KernelTimeoutSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    adopted.llm_sent = adopted.llm_received = _UNSET
    socket.socket.settimeout(adopted, None)  # blocking: the kernel times each call
    adopted.llm_timeout = timeout
    return adopted
