"""Per-plugin book-keeping: call counts, hook timings and the circuit breaker.

One :class:`PluginRecord` per registered plugin. Its lock guards only its own
counters and is held for a few hundred nanoseconds per hook call, never
across a plugin call or a logging call.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from llmpool.plugins.base import HOOKS, LLMPlugin
from llmpool.stats_math import percentile, percentiles

__all__ = ["RESERVOIR_SIZE", "HookStats", "PluginRecord", "percentile"]

#: Durations kept per (plugin, hook) for the p50/p99 figures: the most recent ones.
RESERVOIR_SIZE = 512


class HookStats:
    """Counters of one hook of one plugin. Guarded by its record's lock."""

    __slots__ = ("calls", "durations", "failures")

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.durations: deque[float] = deque(maxlen=RESERVOIR_SIZE)

    def snapshot(self) -> dict[str, Any]:
        p50, p99 = percentiles(self.durations, (0.50, 0.99))
        return {
            "calls": self.calls,
            "failures": self.failures,
            "p50_us": round(p50 * 1e6, 3),
            "p99_us": round(p99 * 1e6, 3),
        }


class PluginRecord:
    """A registered plugin with its statistics and circuit-breaker state.

    Thread safety: every method may be called from any thread; ``lock``
    guards the counters. ``disabled_until`` is read without the lock on the
    hot path (a stale read only delays the breaker by one call).
    """

    def __init__(
        self,
        plugin: LLMPlugin,
        *,
        source: str,
        module: str | None,
        sha256: str | None,
    ) -> None:
        self.plugin = plugin
        self.name = plugin.name
        self.source = source
        self.module = module
        self.sha256 = sha256
        #: Serialises the plugin's hooks when it is not thread-safe.
        self.call_lock: threading.RLock | None = None if plugin.thread_safe else threading.RLock()
        # Guards every counter below.
        self.lock = threading.Lock()
        self.hooks = {hook: HookStats() for hook in HOOKS}
        self.calls = 0
        self.failures = 0
        self.raised = 0
        self.consecutive_failures = 0
        self.skipped = 0
        self.times_disabled = 0
        self.disabled_until: float | None = None
        self.last_logged: float | None = None
        self.suppressed_logs = 0

    def reset_locks(self) -> None:
        """Replace the locks (in a forked child, where another thread may have held them)."""
        self.lock = threading.Lock()
        if self.call_lock is not None:
            self.call_lock = threading.RLock()

    def succeeded(self, hook: HookStats, duration: float) -> None:
        """Count a hook call that returned normally."""
        with self.lock:
            self.calls += 1
            hook.calls += 1
            hook.durations.append(duration)
            self.consecutive_failures = 0

    def raised_on_purpose(self, hook: HookStats, duration: float) -> None:
        """Count an llmpool error a critical plugin raised to fail the call."""
        with self.lock:
            self.calls += 1
            self.raised += 1
            hook.calls += 1
            hook.durations.append(duration)

    def failed(
        self,
        hook: HookStats,
        duration: float,
        *,
        now: float,
        threshold: int,
        cooldown: float | None,
    ) -> bool:
        """Count a failed hook call; return True when it opens the breaker.

        *cooldown* None means the breaker does not apply (critical plugins).
        After a cooldown the failure count stays at the threshold, so one
        more failure opens the breaker again (the half-open state).
        """
        with self.lock:
            self.calls += 1
            self.failures += 1
            hook.calls += 1
            hook.failures += 1
            hook.durations.append(duration)
            self.consecutive_failures += 1
            if (
                cooldown is None
                or self.disabled_until is not None
                or self.consecutive_failures < threshold
            ):
                return False
            self.disabled_until = now + cooldown
            self.times_disabled += 1
            return True

    def allows(self, now: float) -> bool:
        """Whether a disabled plugin may run again (its cooldown is over)."""
        with self.lock:
            if self.disabled_until is None:
                return True
            if now >= self.disabled_until:
                self.disabled_until = None
                return True
            self.skipped += 1
            return False

    def should_log(self, now: float, interval: float) -> tuple[bool, int]:
        """Rate-limit failure logs: (log now?, messages suppressed since the last)."""
        with self.lock:
            if self.last_logged is not None and now - self.last_logged < interval:
                self.suppressed_logs += 1
                return False, 0
            suppressed, self.suppressed_logs = self.suppressed_logs, 0
            self.last_logged = now
            return True, suppressed

    def snapshot(self, now: float) -> dict[str, Any]:
        """A plain-dict copy of the counters (taken under the lock)."""
        plugin = self.plugin
        with self.lock:
            hooks = {name: h.snapshot() for name, h in self.hooks.items() if h.calls}
            until = self.disabled_until
            return {
                "version": plugin.version,
                "source": self.source,
                "module": self.module,
                "sha256": self.sha256,
                "priority": plugin.priority,
                "critical": plugin.critical,
                "thread_safe": plugin.thread_safe,
                "calls": self.calls,
                "failures": self.failures,
                "raised": self.raised,
                "consecutive_failures": self.consecutive_failures,
                "skipped": self.skipped,
                "times_disabled": self.times_disabled,
                "disabled": until is not None and now < until,
                "disabled_until": until,
                "disabled_for": max(0.0, until - now) if until is not None else 0.0,
                "hooks": hooks,
            }
