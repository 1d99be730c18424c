"""The throttles behind the manager's actions, and glibc's ``malloc_trim``.

:class:`GCBook` decides whether a collection may run (the cooldown, and the
5% cost rule) and records each run; :class:`LogLimiter` keeps repeated
failures to one log line a minute per kind.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from llmpool.memory.report import GCRun, GCStats

__all__ = ["GC_COST_FRACTION", "GCBook", "LogLimiter", "malloc_trim"]

#: A collection is skipped while the last one cost more than this share of the time since it.
GC_COST_FRACTION = 0.05


@functools.lru_cache(maxsize=1)
def _malloc_trim_function() -> Callable[[int], int] | None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        function: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc: musl, macOS, Windows
    return function


def malloc_trim() -> bool | None:
    """Ask glibc to give freed heap memory back to the system.

    Returns whether memory was released, or None where ``malloc_trim`` does
    not exist (then nothing happens).
    """
    function = _malloc_trim_function()
    return None if function is None else bool(function(0))


class GCBook:
    """The manager's collections: the throttle that decides whether one may run, and
    the record of those that did. Not thread-safe: used under the manager's lock."""

    __slots__ = (
        "collected",
        "last",
        "running",
        "runs",
        "skipped_cooldown",
        "skipped_cost",
        "total",
    )

    def __init__(self) -> None:
        self.runs = 0
        self.total = 0.0
        self.collected = 0
        self.skipped_cooldown = 0
        self.skipped_cost = 0
        self.last: GCRun | None = None
        self.running = False

    def due(self, now: float, cooldown: float) -> bool:
        """Whether a collection may run now; counts the skip when not."""
        if self.running:
            return False
        if self.last is not None:
            since = now - self.last.end
            if since < cooldown:
                self.skipped_cooldown += 1
                return False
            if self.last.duration > GC_COST_FRACTION * since:
                self.skipped_cost += 1
                return False
        self.running = True
        return True

    def add(self, run: GCRun | None) -> None:
        self.running = False
        if run is not None:
            self.runs += 1
            self.total += run.duration
            self.collected += max(run.collected, 0)
            self.last = run

    def freeze(self) -> GCStats:
        return GCStats(
            runs=self.runs,
            total_duration=self.total,
            collected=self.collected,
            skipped_cooldown=self.skipped_cooldown,
            skipped_cost=self.skipped_cost,
            last=self.last,
        )


class LogLimiter:
    """One log line per kind per interval. Not thread-safe: used under the manager's lock."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, kind: str, now: float) -> int | None:
        """None to stay quiet, else how many lines of *kind* were suppressed since the last."""
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._suppressed.pop(kind, 0)
