"""The Redis backend: one budget, one cache and one view of cool-downs for
every process and host pointed at the same Redis.

The only module of llmpool that imports redis (the ``redis`` extra); it is
imported only when a configuration chooses ``backend: redis``.

Each operation is one command or one Lua script (one round trip) on a
connection drawn from redis-py's pool. Connecting is bounded by the state's
``timeout``, and a reply by that timeout or the call's time left, whichever
is shorter. redis-py's own retries are off: a failure is reported at once
(:class:`~llmpool.exceptions.StateBackendError`) and the caller applies the
``on_backend_error`` policy; the connection is dropped, and the next
operation opens a new one, so the backend reconnects by itself when Redis
is back (after a restart, or a failover that ends a ``READONLY`` reply).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import redis
import redis.exceptions

from llmpool.forking import reset_after_fork
from llmpool.redaction import redact_url
from llmpool.state import scripts
from llmpool.state.base import Admission, ErrorLog, RateLimits, StateBackend
from llmpool.state.config import StateConfig
from llmpool.state.keys import key_part

__all__ = ["RedisBackend"]

#: What a failing Redis raises through redis-py (READONLY is a ResponseError).
_FAILURES = (redis.exceptions.RedisError, OSError)

#: TTL of a cache entry stored without one: nothing else would ever remove it.
DEFAULT_CACHE_TTL = 3600.0


class RedisBackend(StateBackend):
    """Shared state in Redis (see the module docstring).

    Thread-safe: redis-py's connection pool hands each thread its own
    connection; the lock below guards only counters and the pool's swap
    after a fork, never a round trip. Fork-safe: the child drops the
    connections it inherited and opens its own.
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
        self._shas = {
            text: hashlib.sha1(text.encode()).hexdigest()
            for text in (
                scripts.ADMIT,
                scripts.RECONCILE,
                scripts.COOLDOWN_SET,
                scripts.COOLDOWN_GET,
            )
        }
        # Guards the counters and the pool rebind after a fork.
        self._lock = threading.Lock()
        self._pool = self._new_pool()
        self._round_trips = 0
        self._script_loads = 0
        self._closed = False
        reset_after_fork(self, "_after_fork")

    def _new_pool(self) -> redis.ConnectionPool:
        timeout = self.config.timeout
        assert self.config.url is not None
        return redis.ConnectionPool.from_url(
            self.config.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=0,
        )

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's connections (never close them:
        they are the parent's sockets) and open new ones on demand."""
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    # ------------------------------------------------------------------ round trips

    def _run(self, operation: str, timeout: float | None, *args: Any) -> Any:
        """Send one command and read its reply, within the bounds above."""
        limit = self.config.timeout if timeout is None else min(timeout, self.config.timeout)
        if limit <= 0:
            raise self._errors.record(operation, TimeoutError("no time left"), self._where)
        pool = self._pool
        try:
            conn = pool.get_connection()
        except _FAILURES as exc:
            raise self._errors.record(operation, exc, self._where) from exc
        try:
            conn.send_command(*args)  # type: ignore[no-untyped-call]
            if limit < self.config.timeout:
                reply = conn.read_response(timeout=limit)
            else:
                reply = conn.read_response()
        except redis.exceptions.NoScriptError:
            raise
        except _FAILURES as exc:
            conn.disconnect()  # type: ignore[no-untyped-call]  # a READONLY replica or a half-read reply: start afresh
            raise self._errors.record(operation, exc, self._where) from exc
        finally:
            pool.release(conn)
        with self._lock:
            self._round_trips += 1
        return reply

    def _script(
        self, operation: str, text: str, keys: list[str], args: list[Any], timeout: float | None
    ) -> Any:
        """Run a Lua script by its SHA (one round trip); load it once when Redis
        does not know it (after a restart or a SCRIPT FLUSH)."""
        sha = self._shas[text]
        try:
            return self._run(operation, timeout, "EVALSHA", sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            with self._lock:
                self._script_loads += 1
            return self._run(operation, timeout, "EVAL", text, len(keys), *keys, *args)

    # ------------------------------------------------------------------ keys

    def _window_keys(self, scope: str) -> list[str]:
        tag = f"{{{self.prefix}:rl:{key_part(scope)}}}"
        return [f"{tag}:r", f"{tag}:t", f"{tag}:m"]

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
        args = [
            int(limits.window * 1_000_000),
            limits.requests or 0,
            limits.tokens or 0,
            want,
        ]
        keys = self._window_keys(scope)
        reply = self._script("admit", scripts.ADMIT, keys, args, timeout)
        if int(reply[0]) == 1:
            ticket = reply[1]
            return Admission(
                admitted=True, ticket=ticket.decode() if isinstance(ticket, bytes) else ticket
            )
        wait = int(reply[1])
        return Admission(admitted=False, wait=float("inf") if wait < 0 else wait / 1_000_000)

    def reconcile(
        self,
        scope: str,
        limits: RateLimits,
        ticket: str,
        *,
        tokens: int,
        timeout: float | None = None,
    ) -> None:
        if limits.tokens is None:
            return
        keys = self._window_keys(scope)[1:]
        self._script("reconcile", scripts.RECONCILE, keys, [ticket, max(int(tokens), 0)], timeout)

    # ------------------------------------------------------------------ cache

    def cache_get(self, key: str, *, timeout: float | None = None) -> Any:
        return self._run("cache_get", timeout, "GET", self.cache_key(key))

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
        self._run("cache_set", timeout, "SET", self.cache_key(key), value, "PX", ms)
        return True

    # ------------------------------------------------------------------ cool-downs

    def set_cooldown(self, scope: str, name: str, until_unix: float) -> None:
        key = self.cooldown_key(scope)
        self._script("set_cooldown", scripts.COOLDOWN_SET, [key], [name, repr(until_unix)], None)

    def get_cooldowns(self, scope: str) -> dict[str, float]:
        key = self.cooldown_key(scope)
        reply = self._script("get_cooldowns", scripts.COOLDOWN_GET, [key], [], None)
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in reply[0::2]]
        return {name: float(until) for name, until in zip(names, reply[1::2], strict=True)}

    # ------------------------------------------------------------------ lifecycle

    def stats(self) -> dict[str, Any]:
        with self._lock:
            own = {"round_trips": self._round_trips, "script_loads": self._script_loads}
        return {"backend": self.name, "url": self._where, **own, **self._errors.stats()}

    def describe(self) -> str:
        return f"redis at {self._where}"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.disconnect()

    def __repr__(self) -> str:
        return f"<RedisBackend {self._where} prefix={self.prefix!r}>"
