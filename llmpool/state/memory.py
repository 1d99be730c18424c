"""The in-process backend: each process keeps its own windows, cache and cool-downs.

The default. It follows the same rules as the Redis backend (a sliding
window log per scope, the same expiry rule for cache entries and
cool-downs) but nothing is shared between processes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from llmpool.forking import renew_lock, reset_after_fork
from llmpool.state.base import Admission, RateLimits, StateBackend

__all__ = ["MemoryBackend"]

#: Cool-downs kept (expired ones are dropped first when the bound is reached).
MAX_COOLDOWNS = 10_000


class _Window:
    """One scope's sliding window: admission times and token reservations."""

    __slots__ = ("calls", "reserved", "seq", "used")

    def __init__(self) -> None:
        self.calls: deque[float] = deque()
        # ticket -> [time, tokens], in admission (time) order
        self.reserved: OrderedDict[str, list[float]] = OrderedDict()
        self.used = 0.0
        self.seq = 0

    def prune(self, cutoff: float) -> None:
        """Forget what was admitted at or before *cutoff*."""
        calls, reserved = self.calls, self.reserved
        while calls and calls[0] <= cutoff:
            calls.popleft()
        while reserved:
            first = next(iter(reserved.values()))
            if first[0] > cutoff:
                break
            reserved.popitem(last=False)
            self.used -= first[1]
        if not reserved:
            self.used = 0.0

    def wait(self, limits: RateLimits, tokens: int, now: float) -> float:
        """Seconds until a call reserving *tokens* fits (0.0: it fits now)."""
        wait = 0.0
        if limits.requests is not None and len(self.calls) >= limits.requests:
            wait = self.calls[len(self.calls) - limits.requests] + limits.window - now
        if limits.tokens is not None and self.used + tokens > limits.tokens:
            need = self.used + tokens - limits.tokens
            leaves = float("inf")
            for at, amount in self.reserved.values():
                need -= amount
                if need <= 0:
                    leaves = at + limits.window - now
                    break
            wait = max(wait, leaves)
        return wait


class _Entry:
    __slots__ = ("expires", "size", "value")

    def __init__(self, value: Any, size: int, expires: float | None) -> None:
        self.value = value
        self.size = size
        self.expires = expires


class MemoryBackend(StateBackend):
    """The in-process state backend (the default): an LRU cache bounded in
    entries and bytes, sliding windows per scope (at most *max_scopes*, least
    recently used dropped first) and cool-downs.

    Thread-safe: one lock guards all of it, held for microseconds, never
    across a sleep or a call out. *clock* (monotonic) times windows and cache
    entries; *wall_clock* (seconds since the epoch) times cool-downs.
    """

    name = "memory"
    shared = False

    def __init__(
        self,
        *,
        max_cache_entries: int = 1024,
        max_cache_bytes: int = 16 * 1024 * 1024,
        max_scopes: int = 256,
        on_backend_error: str = "allow",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_cache_entries = max_cache_entries
        self.max_cache_bytes = max_cache_bytes
        self.max_scopes = max_scopes
        self.on_backend_error = on_backend_error
        self._clock = clock
        self._wall_clock = wall_clock
        # Guards every structure and counter below.
        self._lock = threading.Lock()
        reset_after_fork(self, renew_lock)
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._evictions = self._expired = self._too_large = self._clears = 0
        self._cooldowns: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------------ rate limits

    def _window(self, scope: str) -> _Window:
        """The window of *scope* (created on first use). Called with the lock held."""
        window = self._windows.get(scope)
        if window is None:
            window = self._windows[scope] = _Window()
            if len(self._windows) > self.max_scopes:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(scope)
        return window

    def admit(
        self, scope: str, limits: RateLimits, *, tokens: int = 0, timeout: float | None = None
    ) -> Admission:
        tokens = _fit(limits, tokens)
        now = self._clock()
        with self._lock:
            window = self._window(scope)
            window.prune(now - limits.window)
            wait = window.wait(limits, tokens, now)
            if wait > 0:
                return Admission(admitted=False, wait=wait)
            window.calls.append(now)
            window.seq += 1
            ticket = str(window.seq)
            if limits.tokens is not None:
                window.reserved[ticket] = [now, float(tokens)]
                window.used += tokens
        return Admission(admitted=True, ticket=ticket)

    def reconcile(
        self,
        scope: str,
        limits: RateLimits,
        ticket: str,
        *,
        tokens: int,
        timeout: float | None = None,
    ) -> None:
        with self._lock:
            window = self._windows.get(scope)
            entry = window.reserved.get(ticket) if window is not None else None
            if window is None or entry is None:
                return
            window.used += tokens - entry[1]
            entry[1] = float(tokens)

    def usage(self, scope: str, window: float = 60.0) -> dict[str, float]:
        """``{"requests": n, "tokens": n}`` admitted in the last *window* seconds."""
        with self._lock:
            found = self._windows.get(scope)
            if found is None:
                return {"requests": 0, "tokens": 0}
            found.prune(self._clock() - window)
            return {"requests": len(found.calls), "tokens": found.used}

    # ------------------------------------------------------------------ cache

    def cache_get(self, key: str, *, timeout: float | None = None) -> Any:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires is not None and now >= entry.expires:
                self._drop(key)
                self._expired += 1
                return None
            self._entries.move_to_end(key)
            return entry.value

    def cache_set(
        self,
        key: str,
        value: Any,
        *,
        size: int,
        ttl: float | None,
        timeout: float | None = None,
    ) -> bool:
        expires = self._clock() + ttl if ttl is not None else None
        with self._lock:
            if size > self.max_cache_bytes:
                self._too_large += 1
                return False
            if key in self._entries:
                self._drop(key)
            self._entries[key] = _Entry(value, size, expires)
            self._bytes += size
            while self._bytes > self.max_cache_bytes or len(self._entries) > self.max_cache_entries:
                self._drop(next(iter(self._entries)))
                self._evictions += 1
        return True

    def _drop(self, key: str) -> None:
        """Remove *key*. Called with the lock held."""
        self._bytes -= self._entries.pop(key).size

    def cache_clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._clears += 1

    def cache_stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "max_bytes": self.max_cache_bytes,
                "evictions": self._evictions,
                "expired": self._expired,
                "too_large": self._too_large,
                "clears": self._clears,
            }

    # ------------------------------------------------------------------ cool-downs

    def set_cooldown(self, scope: str, name: str, until_unix: float) -> None:
        now = self._wall_clock()
        with self._lock:
            key = (scope, name)
            if until_unix > self._cooldowns.get(key, float("-inf")):
                self._cooldowns[key] = until_unix
            if len(self._cooldowns) > MAX_COOLDOWNS:
                self._cooldowns = {k: v for k, v in self._cooldowns.items() if v > now}
                while len(self._cooldowns) > MAX_COOLDOWNS:
                    del self._cooldowns[min(self._cooldowns, key=self._cooldowns.__getitem__)]

    def get_cooldowns(self, scope: str) -> dict[str, float]:
        now = self._wall_clock()
        with self._lock:
            expired = [k for k, v in self._cooldowns.items() if k[0] == scope and v <= now]
            for key in expired:
                del self._cooldowns[key]
            return {k[1]: v for k, v in self._cooldowns.items() if k[0] == scope}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"backend": self.name, "scopes": len(self._windows), "errors": 0}


def _fit(limits: RateLimits, tokens: int) -> int:
    """The tokens a call reserves: at least 1 under a tokens budget (a call
    always spends some), at most the budget (or it could never start)."""
    if limits.tokens is None:
        return 0
    return min(max(int(tokens), 1), limits.tokens)
