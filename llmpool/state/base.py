"""The shared-state backend interface, and what every backend has in common.

One small interface serves the built-in plugins and the endpoint health
book: rate-limit admission (a sliding window of requests and tokens per
scope), a cache of byte strings with a TTL, and cool-down deadlines. The
in-process :class:`~llmpool.state.memory.MemoryBackend` and the Redis
backend implement it with the same rules, so a deployment moves from one to
the other by configuration alone.

A backend method that cannot reach its store raises
:class:`~llmpool.exceptions.StateBackendError`; the caller (a plugin)
applies the ``on_backend_error`` policy. :class:`ErrorLog` counts those
failures and logs them at most once a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import attrs

from llmpool.exceptions import StateBackendError
from llmpool.forking import renew_lock, reset_after_fork

__all__ = ["Admission", "ErrorLog", "RateLimits", "StateBackend"]

log = logging.getLogger("llmpool.state")

#: Seconds between two log lines about backend failures (the rest are counted).
LOG_INTERVAL = 60.0


@attrs.frozen(kw_only=True)
class RateLimits:
    """The budget of one scope: at most ``requests`` calls and ``tokens``
    tokens in any ``window`` seconds (None: that budget is not enforced).
    Immutable."""

    requests: int | None = None
    tokens: int | None = None
    window: float = 60.0


@attrs.frozen(kw_only=True)
class Admission:
    """The answer to one admission request. Immutable.

    ``admitted``: the call may go; ``ticket`` then names its token
    reservation (for :meth:`StateBackend.reconcile`). Otherwise ``wait`` is
    the seconds until a retry can succeed (``inf``: never, the request is
    larger than the budget).
    """

    admitted: bool
    wait: float = 0.0
    ticket: str | None = None


class StateBackend(ABC):
    """Where rate-limit windows, cached answers and cool-downs live.

    Thread-safe: one backend serves every thread of a process (and, for a
    shared backend, every process). No method blocks under a lock, and none
    waits longer than its *timeout* (seconds; None: the backend's own
    ``timeout``). Failures raise :class:`~llmpool.exceptions.StateBackendError`.
    """

    #: The backend's name in statistics and errors (``memory``, ``redis``).
    name: str = ""
    #: True when other processes see the same state (values then travel as bytes).
    shared: bool = False
    #: The configured failure policy: ``allow`` or ``deny``.
    on_backend_error: str = "allow"

    # ------------------------------------------------------------------ rate limits

    @abstractmethod
    def admit(
        self, scope: str, limits: RateLimits, *, tokens: int = 0, timeout: float | None = None
    ) -> Admission:
        """Admit one call of *scope* reserving *tokens*, atomically, if both
        sliding windows have room; else say how long to wait. One round trip."""

    @abstractmethod
    def reconcile(
        self,
        scope: str,
        limits: RateLimits,
        ticket: str,
        *,
        tokens: int,
        timeout: float | None = None,
    ) -> None:
        """Replace the reservation *ticket* by the *tokens* the call really used
        (nothing happens when it has already left the window).

        A shared backend may keep a replacement that gives tokens back (usage
        below the reservation) and send it with the scope's next admission
        from this process, so that a call costs one round trip: until then
        the window counts the reservation, never less than was used. Usage
        above the reservation is applied before this returns."""

    # ------------------------------------------------------------------ cache

    @abstractmethod
    def cache_get(self, key: str, *, timeout: float | None = None) -> Any:
        """The value stored under *key*, or None (missing or expired)."""

    @abstractmethod
    def cache_set(
        self,
        key: str,
        value: Any,
        *,
        size: int,
        ttl: float | None,
        timeout: float | None = None,
    ) -> bool:
        """Store *value* (bytes for a shared backend) of *size* bytes for *ttl*
        seconds (None: until evicted). False when it was not stored (too large)."""

    def cache_clear(self) -> None:
        """Drop this process's cached values (a shared cache is left alone)."""
        return  # nothing to do by default

    def cache_stats(self) -> Mapping[str, Any]:
        """The cache's own counters (entries and bytes when the backend knows them)."""
        return {}

    # ------------------------------------------------------------------ cool-downs

    @abstractmethod
    def set_cooldown(self, scope: str, name: str, until_unix: float) -> None:
        """Cool *name* (an endpoint) of *scope* (a group) down until *until_unix*
        (seconds since the epoch). Only ever extends: a later deadline wins, an
        earlier one is ignored."""

    @abstractmethod
    def get_cooldowns(self, scope: str) -> dict[str, float]:
        """``{name: until_unix}`` of the cool-downs of *scope* still in force
        (``until_unix > now`` on the backend's clock); expired ones are omitted."""

    # ------------------------------------------------------------------ lifecycle

    def stats(self) -> dict[str, Any]:
        """The backend's counters as plain data (never a URL with a password)."""
        return {"backend": self.name}

    def close(self) -> None:
        """Release connections. Idempotent."""
        return  # nothing to do by default

    def describe(self) -> str:
        """The backend as a person reads it (a Redis URL without its password)."""
        return self.name


class ErrorLog:
    """Counts backend failures by kind and logs them at most once per
    *interval* seconds (one line names how many were not logged).

    Thread-safe: one lock guards the counters; the log call happens after it.
    """

    def __init__(
        self, backend: str, *, interval: float = LOG_INTERVAL, clock: Any = time.monotonic
    ) -> None:
        self._backend = backend
        self._interval = interval
        self._clock = clock
        # Guards the counters and the time of the last log line.
        self._lock = threading.Lock()
        reset_after_fork(self, renew_lock)
        self._by_kind: dict[str, int] = {}
        self._total = 0
        self._unlogged = 0
        self._last_log: float | None = None

    def record(self, operation: str, exc: BaseException, where: str) -> StateBackendError:
        """Count *exc* (raised by *operation*) and return the typed error to raise."""
        kind = type(exc).__name__
        now = self._clock()
        with self._lock:
            self._total += 1
            self._by_kind[kind] = self._by_kind.get(kind, 0) + 1
            due = self._last_log is None or now - self._last_log >= self._interval
            if due:
                self._last_log = now
                skipped, self._unlogged = self._unlogged, 0
            else:
                self._unlogged += 1
        if due:
            log.warning(
                "state backend %s at %s failed in %s: %s (%d more failures since the last "
                "report; next report in %.0f s at the earliest)",
                self._backend,
                where,
                operation,
                kind,
                skipped,
                self._interval,
            )
        return StateBackendError(
            f"state backend {self._backend} failed in {operation}: {kind}",
            backend=self._backend,
            operation=operation,
            reason=kind,
        )

    def stats(self) -> dict[str, Any]:
        """``{"errors": n, "errors_by_kind": {...}}``."""
        with self._lock:
            return {"errors": self._total, "errors_by_kind": dict(self._by_kind)}
