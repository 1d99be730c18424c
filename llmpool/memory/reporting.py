"""The memory manager's samples and reports, as a base class of
:class:`~llmpool.memory.MemoryManager`: taking a sample (and counting a failed
one), the rate-limited warnings, ``report()``, ``stats()`` and
``tracemalloc_top()``.

Reports read the manager's measurements under the manager's lock, call
gauges outside it, and build one immutable
:class:`~llmpool.memory.report.MemoryReport`.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from llmpool.memory.accounting import Accounting
from llmpool.memory.actions import GCBook, LogLimiter
from llmpool.memory.limits import MemoryLimit
from llmpool.memory.report import MemoryReport, MemorySample, least_squares_slope
from llmpool.memory.state import StateMachine
from llmpool.memory.thread import SamplerThread

__all__ = ["MemoryReports", "traced_memory"]

log = logging.getLogger("llmpool.memory.manager")


class MemoryReports:
    """Samples and reports for :class:`~llmpool.memory.MemoryManager` (its base class).

    Thread-safe as the manager is: the measurements are copied under its
    lock; gauges and samples are taken outside it.
    """

    # The manager's state this part reads (set by MemoryManager.__init__).
    _clock: Callable[[], float]
    _lock: threading.Lock
    _limit: MemoryLimit
    _machine: StateMachine
    _accounting: Accounting
    _gauges: dict[str, Callable[[], Mapping[str, float]]]
    _gc: GCBook
    _latest: MemorySample | None
    _history: deque[tuple[float, int]]
    _first_rss: int | None
    _peak: int
    _samples: int
    _state_since: float
    _sample_errors: int
    _callback_errors: int
    _gauge_errors: int
    _rejected: int
    _limiter: LogLimiter
    _runner: SamplerThread
    _sampler: Callable[[], Any]

    # ------------------------------------------------------------------ samples

    def _take_sample(self) -> MemorySample:
        """Call the sampler; accept anything with ``rss`` (psutil's ``memory_info()``
        result too) by copying its known fields into a MemorySample."""
        sample = self._sampler()
        if isinstance(sample, MemorySample):
            return sample
        return MemorySample(
            rss=int(sample.rss),
            vms=int(getattr(sample, "vms", 0)),
            cgroup_usage=getattr(sample, "cgroup_usage", None),
            threads=getattr(sample, "threads", None),
            open_fds=getattr(sample, "open_fds", None),
            time=self._clock(),
        )

    def _usage_bytes(self, sample: MemorySample) -> int:
        if self._limit.from_cgroup and sample.cgroup_usage is not None:
            return sample.cgroup_usage
        return sample.rss

    def _sample_failed(self, exc: BaseException, now: float) -> None:
        with self._lock:
            self._sample_errors += 1
            count = self._sample_errors
        self._log_limited("sample", now, "memory sample failed (%d so far): %r", count, exc)

    def _log_limited(self, kind: str, now: float, message: str, *args: object) -> None:
        """Log a warning unless one of the same *kind* was logged within a minute."""
        with self._lock:
            suppressed = self._limiter.allow(kind, now)
        if suppressed is None:
            return
        if suppressed:
            message += " (%d similar suppressed)"
            args = (*args, suppressed)
        log.warning("llmpool memory: " + message, *args)

    # ------------------------------------------------------------------ reports

    def report(self) -> MemoryReport:
        """Everything known now, including every gauge (a raising gauge is skipped
        and counted). Samples once on the caller's thread if the thread has not yet."""
        return self._build_report(with_gauges=True)

    def stats(self) -> dict[str, Any]:
        """A compact plain dict for ``client.stats()["memory"]`` (no gauges called)."""
        return self._build_report(with_gauges=False).summary()

    def _build_report(self, *, with_gauges: bool) -> MemoryReport:
        now = self._clock()
        sample = self._latest
        if sample is None:
            sample = self._sample_now(now)
        gauges = self._read_gauges(now) if with_gauges else {}
        operations = self._accounting.snapshot()
        with self._lock:
            state = self._machine.state
            history = list(self._history)
            first_rss = self._first_rss if self._first_rss is not None else sample.rss
            peak, samples, gc_stats = max(self._peak, sample.rss), self._samples, self._gc.freeze()
            errors = (self._sample_errors, self._callback_errors, self._gauge_errors)
            since, rejected = self._state_since, self._rejected
        usage_bytes = self._usage_bytes(sample)
        return MemoryReport(
            time=now,
            pid=sample.pid,
            running=self._runner.running,
            state=state,
            usage=usage_bytes / self._limit.bytes,
            usage_bytes=usage_bytes,
            limit=self._limit.bytes,
            limit_source=self._limit.source,
            cgroup_limit=self._limit.cgroup_limit,
            host_total=self._limit.host_total,
            rss=sample.rss,
            vms=sample.vms,
            cgroup_usage=sample.cgroup_usage,
            slope=least_squares_slope(history),
            window=history[-1][0] - history[0][0] if history else 0.0,
            threads=sample.threads,
            open_fds=sample.open_fds,
            inflight_bytes=self._accounting.inflight,
            operations=operations,
            operations_folded=self._accounting.folded,
            gauges=gauges,
            gc_counts=gc.get_count(),
            gc_collections=tuple(gen["collections"] for gen in gc.get_stats()),
            tracemalloc_current=traced_memory(),
            time_in_state=now - since,
            peak_rss=peak,
            growth=sample.rss - first_rss,
            samples=samples,
            gc=gc_stats,
            sample_errors=errors[0],
            callback_errors=errors[1],
            gauge_errors=errors[2],
            rejected=rejected,
        )

    def _sample_now(self, now: float) -> MemorySample:
        """A sample for a report asked before the first tick (not published)."""
        try:
            return self._take_sample()
        except Exception as exc:
            self._sample_failed(exc, now)
            return MemorySample(rss=0, time=now)

    def _read_gauges(self, now: float) -> dict[str, Mapping[str, float]]:
        values: dict[str, Mapping[str, float]] = {}
        for name, fn in self._gauges.items():
            try:
                values[name] = {str(key): value for key, value in fn().items()}
            except Exception as exc:
                with self._lock:
                    self._gauge_errors += 1
                self._log_limited("gauge", now, "gauge %r raised: %r", name, exc)
        return values

    def tracemalloc_top(self, n: int = 10) -> list[tuple[str, int, int]]:
        """The *n* source lines holding the most traced memory: ``(file:line, bytes,
        blocks)``. Starts tracemalloc if it is not tracing (logged: it slows every
        allocation and costs memory); the first call then shows little, the next
        ones show what was allocated since. Never called by the sampler."""
        import tracemalloc  # on demand only: importing it costs milliseconds

        if not tracemalloc.is_tracing():
            tracemalloc.start()
            log.warning(
                "llmpool memory: tracemalloc started now (it slows allocations; stop it with "
                "tracemalloc.stop()); results cover allocations from this point on"
            )
        snapshot = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),)
        )
        top = snapshot.statistics("lineno")[:n]
        return [
            (f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}", stat.size, stat.count)
            for stat in top
        ]


def traced_memory() -> int | None:
    """tracemalloc's current figure when something is tracing, without importing it."""
    module = sys.modules.get("tracemalloc")
    if module is None or not module.is_tracing():
        return None
    current: int = module.get_traced_memory()[0]
    return current
