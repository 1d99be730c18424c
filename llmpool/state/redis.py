"""The Redis backend: one budget, one cache and one view of cool-downs for
every process and host pointed at the same Redis.

The only module of llmpool that imports redis (the ``redis`` extra); it is
imported only when a configuration chooses ``backend: redis``.

Each operation is one command or one Lua script: one round trip. redis-py
opens and authenticates connections (TLS, ``AUTH``, ``SELECT``); requests
and replies then go through :mod:`llmpool.state.resp` on a connection taken
from a small free list (a thread takes one, uses it, gives it back: no lock,
no per-command hooks), with requests packed once per scope where they can be.

Connecting is bounded by the state's ``timeout``, and a reply by that
timeout or the call's time left, whichever is shorter. There are no
retries, except one on a new connection when an idle one turns out closed
(Redis restarted meanwhile) before any reply: a failure is reported at once
(:class:`~llmpool.exceptions.StateBackendError`) and the caller applies the
``on_backend_error`` policy. A failed connection is dropped and the next
operation opens a new one, so the backend reconnects by itself when Redis
is back (after a restart, or a failover that ends a ``READONLY`` reply).

One round trip per call for a tokens budget: a reconciliation that gives
tokens back (usage below the reservation, the usual case) is kept here and
sent with the next admission of the same scope from this process (applied
first, atomically, by the same script); usage above the reservation is
sent at once, without waiting for the reply (read, in order, by the
connection's next request; an error reply is recorded then). Replacing
a reservation is idempotent (a ticket names its reserved tokens), so one
that may or may not have arrived is sent again.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from typing import Any

import redis
import redis.exceptions

from llmpool import sockets
from llmpool.exceptions import StateBackendError
from llmpool.forking import reset_after_fork
from llmpool.redaction import redact_url
from llmpool.state import resp, scripts
from llmpool.state.base import Admission, ErrorLog, RateLimits, StateBackend
from llmpool.state.config import StateConfig
from llmpool.state.keys import key_part

__all__ = ["RedisBackend"]

#: What a failing Redis raises (redis-py connecting, or the socket).
_FAILURES = (redis.exceptions.RedisError, OSError, resp.ProtocolError)

#: Error replies by their first word, as redis-py would raise them.
_REPLY_ERRORS: dict[str, type[Exception]] = {
    "READONLY": redis.exceptions.ReadOnlyError,
    "NOSCRIPT": redis.exceptions.NoScriptError,
    "LOADING": redis.exceptions.BusyLoadingError,
    "NOAUTH": redis.exceptions.AuthenticationError,
    "WRONGPASS": redis.exceptions.AuthenticationError,
    "NOPERM": redis.exceptions.NoPermissionError,
    "OOM": redis.exceptions.OutOfMemoryError,
}

#: TTL of a cache entry stored without one: nothing else would ever remove it.
DEFAULT_CACHE_TTL = 3600.0

#: Idle connections kept for reuse (more are closed when given back).
MAX_IDLE = 64

#: Deferred reconciliations kept per scope (more are sent in one round trip),
#: and scopes with some (beyond it the oldest scope's are dropped: its tokens
#: then come back when they leave the window, never too early).
MAX_DEFERRED = 64
MAX_DEFERRED_SCOPES = 256

#: Packed key parts kept per scope (the table is emptied when it grows past it).
MAX_PACKED = 1024


class RedisBackend(StateBackend):
    """Shared state in Redis (see the module docstring).

    Thread-safe: a connection serves one thread at a time (taken from and
    given back to a deque, atomic operations); the lock below guards only
    counters and the deferred reconciliations, never a round trip.
    Fork-safe: the child forgets the connections and the deferred
    reconciliations it inherited (the parent's) and opens its own.
    """

    name = "redis"
    shared = True

    def __init__(self, config: StateConfig) -> None:
        if config.url is None:
            raise ValueError("RedisBackend needs a url")
        self.config = config
        self.on_backend_error = config.on_backend_error
        self.prefix = config.key_prefix
        self._where = redact_url(config.url)
        self._errors = ErrorLog(self.name)
        texts = (scripts.ADMIT, scripts.RECONCILE, scripts.COOLDOWN_SET, scripts.COOLDOWN_GET)
        # script text -> (the packed EVALSHA and SHA, the packed EVAL and text)
        self._calls = {
            text: (
                resp.append([b"EVALSHA", hashlib.sha1(text.encode()).hexdigest()]),
                resp.append([b"EVAL", text]),
            )
            for text in texts
        }
        # Only parses the URL and makes connections (never a pool checkout).
        self._factory = redis.ConnectionPool.from_url(
            config.url,
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
            health_check_interval=0,
            protocol=2,
        )
        self._free: deque[resp.Link] = deque()
        # scope -> its packed keys; RateLimits -> its packed budget (ADMIT's
        # first three arguments)
        self._packed: dict[str | RateLimits, bytes] = {}
        # Guards the counters and the deferred reconciliations.
        self._lock = threading.Lock()
        self._deferred: dict[str, list[tuple[str, int]]] = {}
        self._round_trips = self._script_loads = self._reconnects = 0
        #: Requests sent without waiting, and those whose link closed before their reply.
        self._posted = self._unconfirmed = 0
        self._deferred_total = self._deferred_dropped = 0
        self._closed = False
        reset_after_fork(self, "_after_fork")

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's connections (never close them:
        they are the parent's sockets) and its deferred reconciliations."""
        self._lock = threading.Lock()
        self._free = deque()
        self._deferred = {}

    # ------------------------------------------------------------------ round trips

    def _connect(self) -> resp.Link:
        """A new connection, connected and authenticated by redis-py."""
        conn = self._factory.connection_class(**self._factory.connection_kwargs)
        conn.connect()
        sock = conn._sock  # redis-py's socket (every version since 2.x names it so)
        if sock is None:
            raise redis.exceptions.ConnectionError("no socket after connect")
        # a plain socket timed by the kernel: a round trip is two system calls,
        # not five (see llmpool.sockets); redis-py closes the same object
        sock = conn._sock = sockets.adopt(sock)
        return resp.Link(sock, conn, self.config.timeout)

    def _run(self, operation: str, timeout: float | None, payload: bytes) -> Any:
        """Send one request and read its reply, within the bounds above. An
        error reply other than NOSCRIPT is raised as a StateBackendError."""
        limit = self.config.timeout if timeout is None else min(timeout, self.config.timeout)
        if limit <= 0:
            raise self._errors.record(operation, TimeoutError("no time left"), self._where)
        try:
            try:
                link, reused = self._free.pop(), True
            except IndexError:
                link, reused = self._connect(), False
            started = time.monotonic()
            try:
                reply = self._exchange(link, payload, limit)
            except ConnectionError:
                left = limit - (time.monotonic() - started)
                if not reused or left <= 0:
                    raise
                # an idle connection Redis closed meanwhile (a restart): once more, on a
                # new one (safe: admitting twice only over-counts, the rest is idempotent)
                link = self._connect()
                with self._lock:
                    self._reconnects += 1
                reply = self._exchange(link, payload, left)
        except _FAILURES as exc:
            raise self._errors.record(operation, exc, self._where) from exc
        with self._lock:
            self._round_trips += 1
        self._late(link)
        if isinstance(reply, resp.ReplyError) and reply.code != "NOSCRIPT":
            link.close()  # a READONLY replica after a failover: start afresh
            raise self._errors.record(operation, _reply_error(reply), self._where)
        self._give_back(link)
        return reply

    def _post(self, operation: str, timeout: float | None, payload: bytes) -> None:
        """Send one request without waiting for its reply: the link's next
        request reads it (an error reply is then recorded). A failure to
        send is raised as a StateBackendError."""
        limit = self.config.timeout if timeout is None else min(timeout, self.config.timeout)
        if limit <= 0:
            raise self._errors.record(operation, TimeoutError("no time left"), self._where)
        try:
            try:
                link = self._free.pop()
            except IndexError:
                link = self._connect()
            self._exchange(link, payload, limit, wait=False)
        except _FAILURES as exc:
            raise self._errors.record(operation, exc, self._where) from exc
        with self._lock:
            self._posted += 1
        self._give_back(link)

    def _exchange(self, link: resp.Link, payload: bytes, limit: float, *, wait: bool = True) -> Any:
        """*link*'s reply to *payload* (with *wait* False: sent only, the reply
        read by the link's next request); on any failure the link is dropped
        (a half-read reply or a dead socket: that connection is done)."""
        try:
            if wait:
                return link.request(payload, limit)
            link.send(payload, limit)
            return None
        except BaseException:
            self._drop(link)
            raise

    def _late(self, link: resp.Link) -> None:
        """Record the error replies to requests *link* sent without waiting."""
        if link.late_errors:
            for late in link.late_errors:
                self._errors.record("reconcile", _reply_error(late), self._where)
            link.late_errors.clear()

    def _give_back(self, link: resp.Link) -> None:
        """Keep *link* for reuse, or close it (closing, or enough kept)."""
        if self._closed or len(self._free) >= MAX_IDLE:
            self._drop(link)
        else:
            self._free.append(link)

    def _drop(self, link: resp.Link) -> None:
        """Close *link*; requests sent on it without waiting stay unconfirmed."""
        if link.pending:
            with self._lock:
                self._unconfirmed += link.pending
            link.pending = 0
        link.close()

    def _script(
        self,
        operation: str,
        text: str,
        keys: tuple[int, bytes],
        args: list[Any],
        timeout: float | None,
    ) -> Any:
        """Run a Lua script by its SHA (one round trip); send its text once when
        Redis does not know it (after a restart or a SCRIPT FLUSH). *keys*: how
        many parts follow the key count, and those parts packed with it."""
        reply = self._run(operation, timeout, self._script_call(text, keys, args))
        if isinstance(reply, resp.ReplyError):  # NOSCRIPT
            with self._lock:
                self._script_loads += 1
            reply = self._run(operation, timeout, self._script_call(text, keys, args, by_text=True))
            if isinstance(reply, resp.ReplyError):
                raise self._errors.record(operation, RuntimeError(reply), self._where)
        return reply

    def _script_call(
        self, text: str, keys: tuple[int, bytes], args: list[Any], *, by_text: bool = False
    ) -> bytes:
        """One request running script *text*: ``EVALSHA`` (or, *by_text*,
        ``EVAL`` with the text), *keys* (how many parts follow the key count,
        and those parts packed with it), then *args*."""
        by_sha, text_call = self._calls[text]
        head = b"*%d\r\n" % (3 + keys[0] + len(args))
        return head + (text_call if by_text else by_sha) + keys[1] + resp.append(args)

    # ------------------------------------------------------------------ keys

    def _window_keys(self, scope: str) -> list[str]:
        tag = f"{{{self.prefix}:rl:{key_part(scope)}}}"
        return [f"{tag}:l", f"{tag}:m"]

    def _keys_packed(self, scope: str) -> tuple[int, bytes]:
        """The key count and the two keys of *scope*'s window, packed (kept per scope)."""
        packed = self._packed.get(scope)
        if packed is None:
            if len(self._packed) >= MAX_PACKED:
                self._packed = {}
            packed = self._packed[scope] = resp.append([b"2", *self._window_keys(scope)])
        return 2, packed

    def _cooldown_packed(self, scope: str) -> tuple[int, bytes]:
        return 1, resp.append([b"1", self.cooldown_key(scope)])

    def cache_key(self, key: str) -> str:
        """The Redis key of cache entry *key* (a hex digest)."""
        return f"{self.prefix}:c:{key}"

    def cooldown_key(self, scope: str) -> str:
        """The Redis key of the cool-downs of *scope*."""
        return f"{self.prefix}:cd:{key_part(scope)}"

    # ------------------------------------------------------------------ rate limits

    def admit(
        self, scope: str, limits: RateLimits, *, tokens: int = 0, timeout: float | None = None
    ) -> Admission:
        want = 0 if limits.tokens is None else min(max(int(tokens), 1), limits.tokens)
        deferred = self._take(scope) if self._deferred else []
        args: list[Any] = [want]
        for ticket, used in deferred:
            args += (ticket, used)
        count, keys = self._keys_packed(scope)
        budget = self._packed.get(limits)
        if budget is None:
            window = int(limits.window * 1_000_000)
            budget = resp.append([window, limits.requests or 0, limits.tokens or 0])
            self._packed[limits] = budget
        try:
            reply = self._script("admit", scripts.ADMIT, (count + 3, keys + budget), args, timeout)
        except BaseException:
            if deferred:
                self._defer(scope, deferred)  # it may have arrived: sending it again is safe
            raise
        if isinstance(reply, bytes):
            return Admission(admitted=True, ticket=reply.decode())
        return Admission(admitted=False, wait=float("inf") if reply < 0 else reply / 1_000_000)

    def reconcile(
        self,
        scope: str,
        limits: RateLimits,
        ticket: str,
        *,
        tokens: int,
        timeout: float | None = None,
    ) -> None:
        """Give tokens back with the scope's next admission (no round trip now);
        take more at once, with the scope's deferred ones, without waiting for
        the reply (the connection's next request reads it)."""
        if limits.tokens is None:
            return
        tokens = max(int(tokens), 0)
        reserved = int(ticket.rpartition(":")[2] or 0)
        if tokens < reserved:
            self._defer(scope, [(ticket, tokens)])
        elif tokens > reserved:  # sent now, its reply read later: the call waits for nothing
            deferred = self._take(scope)
            # by its text, not its SHA: a NOSCRIPT reply read later could not be answered
            payload = self._script_call(
                scripts.RECONCILE,
                self._keys_packed(scope),
                _flat([*deferred, (ticket, tokens)]),
                by_text=True,
            )
            try:
                self._post("reconcile", timeout, payload)
            except BaseException:
                if deferred:
                    self._defer(scope, deferred)
                raise

    def _take(self, scope: str) -> list[tuple[str, int]]:
        with self._lock:
            return self._deferred.pop(scope, [])

    def _defer(self, scope: str, pairs: list[tuple[str, int]]) -> None:
        with self._lock:
            queue = self._deferred.pop(scope, [])  # re-inserted last: scopes in use order
            queue += pairs
            self._deferred_total += len(pairs)
            full = len(queue) >= MAX_DEFERRED
            if not full:
                self._deferred[scope] = queue
            while len(self._deferred) > MAX_DEFERRED_SCOPES:
                oldest = next(iter(self._deferred))
                self._deferred_dropped += len(self._deferred.pop(oldest))
        if full:
            self._send_deferred(scope, queue, None)

    def _send_deferred(
        self, scope: str, pairs: list[tuple[str, int]], timeout: float | None
    ) -> None:
        keys = self._keys_packed(scope)
        self._script("reconcile", scripts.RECONCILE, keys, _flat(pairs), timeout)

    # ------------------------------------------------------------------ cache

    def cache_get(self, key: str, *, timeout: float | None = None) -> Any:
        return self._run("cache_get", timeout, resp.command(b"GET", self.cache_key(key)))

    def cache_set(
        self,
        key: str,
        value: Any,
        *,
        size: int,
        ttl: float | None,
        timeout: float | None = None,
    ) -> bool:
        ms = max(1, int((DEFAULT_CACHE_TTL if ttl is None else ttl) * 1000))
        if isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
        else:
            data = str(value).encode()
        payload = resp.command(b"SET", self.cache_key(key), data, b"PX", ms)
        self._run("cache_set", timeout, payload)
        return True

    # ------------------------------------------------------------------ cool-downs

    def set_cooldown(self, scope: str, name: str, until_unix: float) -> None:
        keys = self._cooldown_packed(scope)
        self._script("set_cooldown", scripts.COOLDOWN_SET, keys, [name, repr(until_unix)], None)

    def get_cooldowns(self, scope: str) -> dict[str, float]:
        keys = self._cooldown_packed(scope)
        reply = self._script("get_cooldowns", scripts.COOLDOWN_GET, keys, [], None)
        names = [n.decode() for n in reply[0::2]]
        return {name: float(until) for name, until in zip(names, reply[1::2], strict=True)}

    # ------------------------------------------------------------------ lifecycle

    def stats(self) -> dict[str, Any]:
        with self._lock:
            own = {
                "round_trips": self._round_trips,
                "script_loads": self._script_loads,
                "reconnects": self._reconnects,
                "sent_without_waiting": self._posted,
                "unconfirmed": self._unconfirmed,
                "deferred_reconciles": self._deferred_total,
                "deferred_pending": sum(len(q) for q in self._deferred.values()),
                "deferred_dropped": self._deferred_dropped,
            }
        return {"backend": self.name, "url": self._where, **own, **self._errors.stats()}

    def describe(self) -> str:
        return f"redis at {self._where}"

    def close(self) -> None:
        """Send the deferred reconciliations (one round trip per scope, until
        one fails), then close the idle connections. Idempotent."""
        if self._closed:
            return
        with self._lock:
            deferred, self._deferred = self._deferred, {}
        try:
            for scope, pairs in deferred.items():
                self._send_deferred(scope, pairs, None)
        except StateBackendError:
            pass  # counted by the error log; the tokens come back when they leave the window
        self._closed = True
        while self._free:
            link = self._free.pop()
            if link.pending:  # read the replies to what it sent without waiting
                try:
                    self._exchange(link, resp.command(b"PING"), self.config.timeout)
                    self._late(link)
                except _FAILURES:
                    continue  # dropped: its requests stay unconfirmed
            link.close()

    def __repr__(self) -> str:
        return f"<RedisBackend {self._where} prefix={self.prefix!r}>"


def _flat(pairs: list[tuple[str, int]]) -> list[Any]:
    """``(ticket, tokens)`` pairs as the reconciliation script's arguments."""
    return [item for pair in pairs for item in pair]


def _reply_error(reply: resp.ReplyError) -> Exception:
    """An error reply as redis-py would raise it."""
    return _REPLY_ERRORS.get(reply.code, redis.exceptions.ResponseError)(str(reply))
