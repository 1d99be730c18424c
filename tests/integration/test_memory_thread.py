"""The real sampler thread: named daemon, immediate stop, survives errors, exits when dropped."""

from __future__ import annotations

import gc
import threading

from llmpool import MemoryConfig
from llmpool.memory import THREAD_NAME, MemoryLimit, MemoryManager, MemorySample, MemoryState

LIMIT = MemoryLimit(bytes=1000, source="config")
#: Generous bound for waits, never asserted as a duration.
PATIENCE = 30.0


class Signal:
    """A sampler that returns fixed samples and sets an Event after `after` calls."""

    def __init__(self, rss: int = 100, after: int = 1, fail_first: int = 0) -> None:
        self.rss = rss
        self.after = after
        self.fail_first = fail_first
        self.calls = 0
        self.reached = threading.Event()

    def __call__(self) -> MemorySample:
        self.calls += 1
        if self.calls >= self.after:
            self.reached.set()
        if self.calls <= self.fail_first:
            raise OSError("sampler failure")
        return MemorySample(rss=self.rss)


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_thread_is_named_daemon_publishes_and_stops_at_once() -> None:
    """start() runs a daemon named llmpool-memory that publishes samples; stop() ends it
    even with an hour-long interval (it waits on an Event, not a sleep)."""
    signal = Signal(rss=123)
    manager = MemoryManager(MemoryConfig(sample_interval=3600), sampler=signal, limit=LIMIT)
    before = set(sampler_threads())
    manager.start()
    try:
        assert signal.reached.wait(PATIENCE)
        (thread,) = set(sampler_threads()) - before
        assert thread.daemon
        assert manager.running
        snap = manager.snapshot()
        assert snap is not None and snap.rss == 123
    finally:
        manager.stop(timeout=PATIENCE)
    assert not thread.is_alive()
    assert not manager.running


def test_start_is_idempotent_and_restartable() -> None:
    """Two start() calls make one thread; after stop() a new start() makes a new one."""
    signal = Signal()
    manager = MemoryManager(MemoryConfig(sample_interval=3600), sampler=signal, limit=LIMIT)
    before = set(sampler_threads())
    manager.start()
    manager.start()
    first = set(sampler_threads()) - before
    assert len(first) == 1
    manager.stop(timeout=PATIENCE)
    manager.start()
    second = set(sampler_threads()) - before
    assert len(second) == 1 and second != first
    manager.close()
    assert not any(t.is_alive() for t in first | second)


def test_context_manager_starts_and_stops() -> None:
    """`with MemoryManager(...)` runs the thread inside the block only."""
    signal = Signal()
    with MemoryManager(MemoryConfig(sample_interval=3600), sampler=signal, limit=LIMIT) as m:
        assert m.running
        assert signal.reached.wait(PATIENCE)
        thread = m._runner._thread
    assert thread is not None and not thread.is_alive()


def test_thread_survives_a_failing_sampler() -> None:
    """Five failing samples are counted; the thread keeps sampling and publishes after."""
    signal = Signal(after=8, fail_first=5)
    manager = MemoryManager(MemoryConfig(sample_interval=0.001), sampler=signal, limit=LIMIT)
    manager.start()
    try:
        assert signal.reached.wait(PATIENCE)
        assert manager.running
        assert manager.snapshot() is not None
    finally:
        manager.stop(timeout=PATIENCE)
    assert manager.report().sample_errors == 5


def test_a_callback_may_stop_the_manager_from_the_thread() -> None:
    """stop() called inside a pressure callback (on the sampler thread) does not deadlock."""
    signal = Signal(rss=990)
    manager = MemoryManager(
        MemoryConfig(sample_interval=0.001, consecutive_samples=1), sampler=signal, limit=LIMIT
    )
    seen: list[MemoryState] = []
    done = threading.Event()

    def recycle(state: MemoryState, report: object) -> None:
        seen.append(state)
        manager.stop()
        done.set()

    manager.on_pressure(recycle)
    before = set(sampler_threads())
    manager.start()
    (thread,) = set(sampler_threads()) - before
    assert done.wait(PATIENCE)
    thread.join(PATIENCE)
    assert not thread.is_alive()
    assert seen == [MemoryState.CRITICAL]


def test_a_dropped_manager_lets_its_thread_exit() -> None:
    """A manager garbage-collected without stop() wakes its thread, which ends."""
    signal = Signal()
    manager = MemoryManager(MemoryConfig(sample_interval=3600), sampler=signal, limit=LIMIT)
    before = set(sampler_threads())
    manager.start()
    (thread,) = set(sampler_threads()) - before
    assert signal.reached.wait(PATIENCE)
    del manager
    gc.collect()
    thread.join(PATIENCE)
    assert not thread.is_alive()


def test_concurrent_ticks_and_reports_stay_consistent() -> None:
    """Callers' report()/account()/admit() run beside the thread without errors."""
    from concurrent.futures import ThreadPoolExecutor

    signal = Signal(rss=500, after=50)
    manager = MemoryManager(MemoryConfig(sample_interval=0.001), sampler=signal, limit=LIMIT)
    manager.start()

    def work(n: int) -> int:
        for i in range(200):
            manager.account("chat", f"m{n}", i, i, 0.001)
            manager.admit("chat")
            if i % 20 == 0:
                manager.report()
                manager.stats()
        return n

    try:
        with ThreadPoolExecutor(4) as pool:
            assert sorted(f.result() for f in [pool.submit(work, n) for n in range(4)]) == [
                0,
                1,
                2,
                3,
            ]
        assert signal.reached.wait(PATIENCE)
    finally:
        manager.stop(timeout=PATIENCE)
    report = manager.report()
    assert sum(op.count for op in report.operations.values()) == 800
    assert report.sample_errors == 0
