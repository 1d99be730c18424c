"""The memory manager: a sampling thread, the state machine, and its actions.

Each tick takes one sample, feeds the usage fraction to the
:class:`~llmpool.memory.state.StateMachine`, and acts: a log line per state
change, a throttled ``gc.collect()`` from the GC state up, the pressure
callbacks on every upward change (and again every ``pressure_repeat``
seconds while SHED or CRITICAL lasts), and ``admit()`` refusing calls from
SHED up when ``reject_on_pressure`` is set. The manager never kills the
process: recycling a worker is the application's decision, taken in a
callback.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from llmpool.config import MemoryConfig, config_from_keywords
from llmpool.exceptions import MemoryPressureError
from llmpool.forking import reset_after_fork
from llmpool.memory.accounting import Accounting
from llmpool.memory.actions import GCBook, LogLimiter, malloc_trim
from llmpool.memory.limits import MemoryLimit, discover_limit
from llmpool.memory.report import (
    GCRun,
    MemoryReport,
    MemorySample,
    format_bytes,
)
from llmpool.memory.reporting import MemoryReports
from llmpool.memory.sampler import Sampler
from llmpool.memory.state import MemoryState, StateMachine
from llmpool.memory.thread import THREAD_NAME, SamplerThread

__all__ = ["THREAD_NAME", "Gauge", "MemoryManager", "PressureCallback", "SampleLike"]

log = logging.getLogger(__name__)

#: Seconds between two log lines about the same kind of failure.
LOG_INTERVAL = 60.0

PressureCallback = Callable[[MemoryState, MemoryReport], None]


class SampleLike(Protocol):
    """What a sampler returns: a :class:`MemorySample`, or anything with ``rss``
    (``vms``, ``cgroup_usage``, ``threads`` and ``open_fds`` are read if present)."""

    @property
    def rss(self) -> int: ...


Gauge = Callable[[], Mapping[str, float]]


class MemoryManager(MemoryReports):
    """Watches this process's memory against a budget from a daemon thread.

    One per process, shared by all threads. Every public method is
    thread-safe. ``admit()``, ``account()`` and ``snapshot()`` are built for
    the request path: ``admit()`` reads one attribute unless it rejects,
    ``snapshot()`` returns the immutable sample the thread published by one
    attribute rebind, ``account()`` holds a small lock for a few counter
    updates. Callbacks and gauges run outside every lock. After ``os.fork()``
    the child gets fresh locks, fresh measurements and, if the parent's
    thread was running, a thread of its own.

    *sampler*, *clock* and *collect* are injectable so tests drive the state
    machine with :meth:`tick` and synthetic samples; *limit* overrides limit
    discovery.

    Configure it with a :class:`~llmpool.MemoryConfig` or, as the original
    design wrote it, with the same fields as keywords:
    ``MemoryManager(max_memory_mb=512)``. The keywords build a
    ``MemoryConfig`` (same validation); giving both, or a keyword that is not
    a ``MemoryConfig`` field, raises :class:`~llmpool.exceptions.ConfigError`
    naming it.
    """

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        sampler: Callable[[], SampleLike] | None = None,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[], int] = gc.collect,
        limit: MemoryLimit | None = None,
        **options: Any,
    ) -> None:
        self._config = config_from_keywords(MemoryConfig, config, options, owner="MemoryManager")
        cfg = self._config
        self._clock = clock
        self._collect = collect
        self._limit = limit if limit is not None else discover_limit(cfg.max_memory_mb)
        self._sampler = (
            sampler
            if sampler is not None
            else Sampler(self._limit.cgroup if self._limit.from_cgroup else None, clock=clock)
        )
        self._machine = StateMachine(
            (cfg.warn, cfg.gc, cfg.shed, cfg.critical), cfg.consecutive_samples, cfg.hysteresis
        )
        self._accounting = Accounting(cfg.max_operations)
        # Copy-on-write registries: replaced under the lock, read without it.
        self._callbacks: tuple[PressureCallback, ...] = ()
        self._gauges: dict[str, Gauge] = {}
        self._runner = SamplerThread(cfg.sample_interval)
        self._init_runtime()
        reset_after_fork(self, "_after_fork_in_child", last=True)  # it restarts the thread

    def _init_runtime(self) -> None:
        """Fresh lock, lifecycle and measurements (construction, and a forked child)."""
        # Guards the measurements below, the GC book, the log limiter and registry
        # writes. Never held across a sample, a collection, a callback, a gauge or a
        # logging call.
        self._lock = threading.Lock()
        self._limiter = LogLimiter(LOG_INTERVAL)
        self._gc = GCBook()
        self._machine.reset()
        self._reject = False
        self._latest: MemorySample | None = None
        self._history: deque[tuple[float, int]] = deque(maxlen=self._config.history)
        self._first_rss: int | None = None
        self._peak = 0
        self._samples = 0
        self._usage = 0.0
        self._state_since = self._clock()
        self._last_notify: float | None = None
        self._sample_errors = 0
        self._callback_errors = 0
        self._gauge_errors = 0
        self._rejected = 0

    # ------------------------------------------------------------------ properties

    @property
    def config(self) -> MemoryConfig:
        """The configuration this manager was built with."""
        return self._config

    @property
    def limit(self) -> MemoryLimit:
        """The budget and its source (discovered once, at construction)."""
        return self._limit

    @property
    def state(self) -> MemoryState:
        """The current state."""
        return self._machine.state

    @property
    def running(self) -> bool:
        """Whether the sampler thread is alive."""
        return self._runner.running

    def __repr__(self) -> str:
        return (
            f"<MemoryManager state={self.state.value} limit={format_bytes(self._limit.bytes)} "
            f"({self._limit.source}) running={self.running}>"
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the sampler thread (idempotent). It samples at once, then every
        ``sample_interval`` seconds."""
        self._runner.start(self, MemoryManager._tick_in_thread)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the sampler thread: wake it and wait up to *timeout* seconds for it."""
        self._runner.stop(timeout)

    def close(self) -> None:
        """Stop the sampler thread and close the default sampler's kept-open files
        (the manager can be started again; the files reopen on the next sample)."""
        self.stop()
        if isinstance(self._sampler, Sampler):
            self._sampler.close()

    def __enter__(self) -> MemoryManager:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the request path

    def admit(self, operation: str = "") -> None:
        """Refuse a new call with :class:`~llmpool.exceptions.MemoryPressureError`
        when ``reject_on_pressure`` is set and the state is SHED or CRITICAL."""
        if self._reject:
            self._refuse(operation)

    def _refuse(self, operation: str) -> None:
        with self._lock:
            self._rejected += 1
            state, usage = self._machine.state, self._usage
        what = f"call {operation!r}" if operation else "call"
        raise MemoryPressureError(
            f"memory pressure: {what} rejected in state {state.value} "
            f"({usage:.0%} of {format_bytes(self._limit.bytes)})",
            state=state,
            usage=usage,
        )

    def account(
        self, operation: str, model: str | None, bytes_in: int, bytes_out: int, duration: float
    ) -> None:
        """Account one finished call under the key ``operation:model`` (bounded keys)."""
        key = f"{operation}:{model}" if model else operation
        self._accounting.record(key, bytes_in, bytes_out, duration)

    def track_memory_usage(self, operation: str, size: int, duration: float | None = None) -> None:
        """Account *size* bytes for *operation*: the original design's method,
        the same accounting as ``account(operation, None, size, 0, duration)``
        (the size counts as bytes in; a None duration adds no time)."""
        self._accounting.record(operation, size, 0, duration)

    def add_inflight(self, delta: int) -> None:
        """Add *delta* bytes being received (negative when they are released)."""
        self._accounting.add_inflight(delta)

    @contextlib.contextmanager
    def inflight(self, nbytes: int) -> Iterator[None]:
        """Count *nbytes* as in flight for the duration of the ``with`` block."""
        self._accounting.add_inflight(nbytes)
        try:
            yield
        finally:
            self._accounting.add_inflight(-nbytes)

    def snapshot(self) -> MemorySample | None:
        """The latest published sample (None before the first tick)."""
        return self._latest

    # ------------------------------------------------------------------ registries

    def on_pressure(self, callback: PressureCallback) -> PressureCallback:
        """Register *callback(state, report)*; called in registration order, outside
        every lock, on each upward state change and every ``pressure_repeat`` seconds
        while SHED or CRITICAL lasts. Returns *callback* (usable as a decorator)."""
        with self._lock:
            self._callbacks = (*self._callbacks, callback)
        return callback

    def register_gauge(self, name: str, fn: Gauge) -> None:
        """Include ``fn()`` (a mapping of numbers) in every report under *name*."""
        with self._lock:
            self._gauges = {**self._gauges, name: fn}

    def unregister_gauge(self, name: str) -> None:
        """Stop reporting the gauge *name* (no error if absent)."""
        with self._lock:
            self._gauges = {k: v for k, v in self._gauges.items() if k != name}

    # ------------------------------------------------------------------ one tick

    def tick(self) -> MemoryState:
        """Take one sample, run the state machine and the actions, synchronously.

        The thread calls this every ``sample_interval``; tests call it directly.
        A failing sampler is counted and leaves the state unchanged.
        """
        now = self._clock()
        try:
            sample = self._take_sample()
            usage = self._usage_bytes(sample) / self._limit.bytes
        except Exception as exc:  # a sampler that raises or returns junk
            self._sample_failed(exc, now)
            return self._machine.state
        with self._lock:
            previous = self._machine.state
            state = self._machine.update(usage)
            self._record(now, sample, usage)
            if state is not previous:
                self._state_since = now
            self._reject = self._config.reject_on_pressure and state >= MemoryState.SHED
            collect = state >= MemoryState.GC and self._gc.due(now, self._config.gc_cooldown)
            notify = self._notify_due(previous, state, now)
        if state is not previous:
            self._log_change(previous, state, usage)
        if collect:
            self._collect_garbage(sample)
        if notify:
            self._call_back(state)
        return state

    def _record(self, now: float, sample: MemorySample, usage: float) -> None:
        """Keep the sample's numbers (under the lock) and publish it."""
        self._samples += 1
        self._usage = usage
        self._history.append((now, sample.rss))
        if self._first_rss is None:
            self._first_rss = sample.rss
        self._peak = max(self._peak, sample.rss)
        self._latest = sample

    def _notify_due(self, previous: MemoryState, state: MemoryState, now: float) -> bool:
        repeat = self._config.pressure_repeat
        due = state > previous or (
            state is previous
            and state >= MemoryState.SHED
            and repeat is not None
            and self._last_notify is not None
            and now - self._last_notify >= repeat
        )
        if due:
            self._last_notify = now
        return due

    def _log_change(self, previous: MemoryState, state: MemoryState, usage: float) -> None:
        if state > previous:
            level = logging.ERROR if state is MemoryState.CRITICAL else logging.WARNING
        else:
            level = logging.INFO
        log.log(
            level,
            "llmpool memory: %s -> %s at %.1f%% of %s (%s)",
            previous.value,
            state.value,
            usage * 100,
            format_bytes(self._limit.bytes),
            self._limit.source,
        )

    def _collect_garbage(self, before: MemorySample) -> None:
        """Run one throttled collection (and malloc_trim when configured); record it."""
        run: GCRun | None = None
        try:
            run = self._run_collection(before)
        finally:
            with self._lock:
                self._gc.add(run)
        log.info(
            "llmpool memory: gc.collect() found %d unreachable objects in %.3f s; rss %s -> %s",
            run.collected,
            run.duration,
            format_bytes(run.rss_before),
            format_bytes(run.rss_after),
        )

    def _run_collection(self, before: MemorySample) -> GCRun:
        start = self._clock()
        try:
            collected = int(self._collect())
        except Exception as exc:
            self._log_limited("collect", start, "gc.collect() raised: %r", exc)
            collected = -1
        duration = max(self._clock() - start, 0.0)
        trimmed = malloc_trim() if self._config.trim_on_gc else None
        try:
            rss_after: int | None = self._take_sample().rss
        except Exception as exc:
            self._sample_failed(exc, self._clock())
            rss_after = None
        return GCRun(
            at=start,
            duration=duration,
            rss_before=before.rss,
            rss_after=rss_after,
            collected=collected,
            trimmed=trimmed,
        )

    def _call_back(self, state: MemoryState) -> None:
        callbacks = self._callbacks
        if not callbacks:
            return
        report = self._build_report(with_gauges=True)
        for callback in callbacks:
            try:
                callback(state, report)
            except (Exception, SystemExit) as exc:
                with self._lock:
                    self._callback_errors += 1
                name = getattr(callback, "__qualname__", type(callback).__name__)
                self._log_limited(
                    "callback", self._clock(), "pressure callback %s raised: %r", name, exc
                )

    # ------------------------------------------------------------------ failures

    def _tick_in_thread(self) -> None:
        """One tick for the thread: an unexpected error is counted, never fatal."""
        try:
            self.tick()
        except Exception as exc:
            self._sample_failed(exc, self._clock())

    # ------------------------------------------------------------------ fork

    def _after_fork_in_child(self) -> None:
        """Reset locks and measurements in a forked child; restart the thread if it ran."""
        self._init_runtime()
        self._accounting.reset()
        after_fork = getattr(self._sampler, "after_fork", None)
        if callable(after_fork):
            after_fork()
        self._runner.after_fork(self, MemoryManager._tick_in_thread)
