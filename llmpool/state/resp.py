"""The few bytes of Redis's protocol (RESP2) the Redis backend speaks itself.

redis-py opens and authenticates a connection (TLS, ``AUTH``, ``SELECT``);
after that, each operation of the backend is one request written with
:func:`command` (or a prefix packed once and :func:`append`-ed to) and one
reply read by :class:`Link`, without redis-py's per-command work (a pool
checkout with its observability hooks, argument encoding, a reply parser
and its callbacks), about 40 µs per round trip on a 2-core machine.

Pure Python with no import of redis (only ``state/redis.py`` imports it).
A :class:`Link` is used by one thread at a time (the backend hands it out);
the functions are pure and thread-safe.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["Link", "ProtocolError", "ReplyError", "append", "command", "parse"]

#: Bytes asked for per ``recv`` (a bigger reply, a cached answer, takes several).
READ_SIZE = 65536


class ReplyError(str):
    """An error reply (``-READONLY You can't write...``), as a value: the
    connection is still usable. Its first word names it (``READONLY``)."""

    __slots__ = ()

    @property
    def code(self) -> str:
        """The first word: ``ERR``, ``NOSCRIPT``, ``READONLY``..."""
        return self.split(" ", 1)[0]


class ProtocolError(Exception):
    """Bytes that are not a RESP2 reply (the connection must be dropped)."""


class _Incomplete(Exception):
    """More bytes are needed; ``args[0]``: at least how many in all."""


def _arg(value: bytes | str | int | float) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode() if isinstance(value, float) else b"%d" % value


def append(parts: Iterable[bytes | str | int | float]) -> bytes:
    """*parts* as bulk strings, to follow a packed prefix (no array header)."""
    out = []
    for part in parts:
        data = _arg(part)
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def command(*parts: bytes | str | int | float, count: int = 0) -> bytes:
    """One request: an array header for ``len(parts) + count`` arguments
    (*count*: the ones :func:`append` adds after it) and *parts*."""
    return b"*%d\r\n" % (len(parts) + count) + append(parts)


def parse(buf: bytes, pos: int = 0) -> tuple[Any, int]:
    """``(value, end)``: the reply starting at *pos* of *buf*. Bulk and simple
    strings are bytes, integers int, a nil None, arrays lists, errors
    :class:`ReplyError`. Raises ``_Incomplete`` when *buf* ends too soon."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete(len(buf) + 1)
    kind, line, pos = buf[pos], buf[pos + 1 : end], end + 2
    if kind == 36:  # $ bulk string
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _Incomplete(pos + size + 2)
        return buf[pos : pos + size], pos + size + 2
    if kind == 58:  # : integer
        return int(line), pos
    if kind == 43:  # + simple string
        return line, pos
    if kind == 45:  # - error
        return ReplyError(line.decode("utf-8", "replace")), pos
    if kind == 42:  # * array
        size = int(line)
        if size < 0:
            return None, pos
        items = []
        for _ in range(size):
            item, pos = parse(buf, pos)
            items.append(item)
        return items, pos
    raise ProtocolError(f"unexpected reply type {chr(kind)!r}")


class Link:
    """One connection to Redis: a connected socket (and what owns it, to close
    it), its current timeout, bytes read past the last reply, and requests
    sent without waiting whose replies are still to be read.

    Not thread-safe: the backend lends each link to one thread at a time.
    """

    __slots__ = ("buf", "late_errors", "owner", "pending", "sock", "timeout")

    def __init__(self, sock: socket.socket, owner: Any, timeout: float | None) -> None:
        self.sock = sock
        #: What closes the socket (a redis-py connection: ``disconnect()``).
        self.owner = owner
        self.timeout = timeout
        self.buf = b""
        #: Requests sent by :meth:`send` whose replies are not read yet.
        self.pending = 0
        #: Error replies to those requests, as they were read (the caller empties it).
        self.late_errors: list[ReplyError] = []

    def send(self, payload: bytes, limit: float) -> None:
        """Send *payload* without waiting for its reply (read, in order, by
        the next :meth:`request`; an error reply lands in ``late_errors``)."""
        self._settimeout(limit)
        self.sock.sendall(payload)
        self.pending += 1

    def request(self, payload: bytes, limit: float) -> Any:
        """Send *payload*, return its reply, all within *limit* seconds
        (``TimeoutError``/``OSError`` otherwise; the link is then unusable).
        Replies to requests sent earlier by :meth:`send` are read first."""
        self._settimeout(limit)
        self.sock.sendall(payload)
        if not self.pending:
            return self._reply(limit)
        deadline = time.monotonic() + limit
        while self.pending:  # every reply read within what is left of *limit*
            late = self._reply(self._left(deadline))
            self.pending -= 1
            if isinstance(late, ReplyError):
                self.late_errors.append(late)
        return self._reply(self._left(deadline))

    def _left(self, deadline: float) -> float:
        """The seconds left before *deadline*, set as the timeout of the next read."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the replies took longer than the time left")
        self._settimeout(left)
        return left

    def _settimeout(self, limit: float) -> None:
        if limit != self.timeout:
            self.sock.settimeout(limit)
            self.timeout = limit

    def _reply(self, limit: float) -> Any:
        """The next reply, from the bytes already read and the socket."""
        data = self.buf or self.sock.recv(READ_SIZE)
        if not data:
            raise ConnectionError("Redis closed the connection")
        try:
            value, end = parse(data)
        except _Incomplete as more:
            value, data, end = self._rest(data, more.args[0], time.monotonic() + limit)
        except (ValueError, IndexError) as exc:
            raise ProtocolError(str(exc)) from exc
        self.buf = data[end:] if end < len(data) else b""
        return value

    def _rest(self, data: bytes, need: int, deadline: float) -> tuple[Any, bytes, int]:
        """Read until the reply begun in *data* (at least *need* bytes) is
        whole: ``(value, the bytes read, where the reply ends in them)``."""
        chunks, have = [data], len(data)
        while True:
            while have < need:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the reply took longer than the time left")
                self.sock.settimeout(left)
                self.timeout = left
                data = self.sock.recv(max(READ_SIZE, need - have))
                if not data:
                    raise ConnectionError("Redis closed the connection")
                chunks.append(data)
                have += len(data)
            joined = b"".join(chunks)
            try:
                value, end = parse(joined)
            except _Incomplete as more:
                chunks, need = [joined], more.args[0]
            except (ValueError, IndexError) as exc:
                raise ProtocolError(str(exc)) from exc
            else:
                return value, joined, end

    def close(self) -> None:
        """Close the connection (idempotent; never raises)."""
        try:
            self.owner.disconnect()
        except Exception:  # closing a broken connection may fail in any way
            self.sock.close()
