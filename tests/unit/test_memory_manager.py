"""MemoryManager driven synchronously: synthetic samples, a fake clock, a fake collector."""

from __future__ import annotations

import ctypes
import json
import logging
import pickle
import platform
import tracemalloc
from typing import Any

import attrs
import pytest

from llmpool import ConfigError, MemoryConfig
from llmpool.exceptions import MemoryPressureError
from llmpool.memory import (
    OTHER,
    CgroupFiles,
    MemoryLimit,
    MemoryManager,
    MemoryReport,
    MemorySample,
    MemoryState,
)
from llmpool.memory import actions as actions_module
from llmpool.memory import manager as manager_module

N, W, G, S, C = (
    MemoryState.NORMAL,
    MemoryState.WARN,
    MemoryState.GC,
    MemoryState.SHED,
    MemoryState.CRITICAL,
)
#: A 1000-byte budget: rss 750 is 75% usage.
LIMIT = MemoryLimit(bytes=1000, source="config", host_total=10_000)


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Feed:
    """A sampler returning the current ``rss`` (or raising ``error``)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.rss = 100
        self.cgroup_usage: int | None = None
        self.error: Exception | None = None
        self.calls = 0

    def __call__(self) -> MemorySample:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return MemorySample(
            rss=self.rss,
            vms=self.rss * 2,
            cgroup_usage=self.cgroup_usage,
            threads=3,
            open_fds=9,
            time=self.clock(),
        )


class Collector:
    """A gc.collect stand-in that costs ``cost`` seconds of the fake clock."""

    def __init__(self, clock: Clock, feed: Feed) -> None:
        self.clock = clock
        self.feed = feed
        self.cost = 0.0
        self.calls = 0
        self.rss_after: int | None = None

    def __call__(self) -> int:
        self.calls += 1
        self.clock.advance(self.cost)
        if self.rss_after is not None:
            self.feed.rss = self.rss_after
        return 42


@attrs.define
class Rig:
    manager: MemoryManager
    clock: Clock
    feed: Feed
    collector: Collector

    def ticks(self, rss: int, n: int = 1, step: float = 1.0) -> list[MemoryState]:
        self.feed.rss = rss
        states = []
        for _ in range(n):
            self.clock.advance(step)
            states.append(self.manager.tick())
        return states


def rig(limit: MemoryLimit = LIMIT, **config: Any) -> Rig:
    clock = Clock()
    feed = Feed(clock)
    collector = Collector(clock, feed)
    manager = MemoryManager(
        MemoryConfig(**config), sampler=feed, clock=clock, collect=collector, limit=limit
    )
    return Rig(manager, clock, feed, collector)


# --------------------------------------------------------------------------- states


@pytest.mark.parametrize(
    ("rss", "state"), [(500, N), (700, W), (850, G), (920, S), (960, C), (2000, C)]
)
def test_each_state_is_entered_on_the_third_sample(rss: int, state: MemoryState) -> None:
    """Usage at or above a threshold for 3 samples enters its state, not before."""
    r = rig()
    assert r.ticks(rss, 3) == [N, N, state]
    assert r.manager.state is state


def test_leaving_waits_for_consecutive_low_samples_below_the_band() -> None:
    """From WARN, usage inside the band (0.66) keeps WARN; 3 samples below 0.65 leave."""
    r = rig()
    r.ticks(720, 3)
    assert r.ticks(660, 5) == [W] * 5
    assert r.ticks(600, 3) == [W, W, N]


def test_time_in_state_counts_from_the_entry() -> None:
    """time_in_state is the clock since the state was entered."""
    r = rig()
    r.ticks(720, 3)
    r.clock.advance(12.0)
    assert r.manager.report().time_in_state == pytest.approx(12.0)


def test_one_log_line_per_state_change_not_per_sample(caplog: pytest.LogCaptureFixture) -> None:
    """Ten samples in WARN log one 'normal -> warn' line; leaving logs one more."""
    r = rig()
    with caplog.at_level(logging.INFO, logger="llmpool.memory.manager"):
        r.ticks(720, 10)
        r.ticks(100, 3)
    changes = [rec for rec in caplog.records if "->" in rec.getMessage()]
    assert [rec.getMessage().split(" at ")[0] for rec in changes] == [
        "llmpool memory: normal -> warn",
        "llmpool memory: warn -> normal",
    ]
    assert [rec.levelno for rec in changes] == [logging.WARNING, logging.INFO]


def test_critical_logs_at_error_level(caplog: pytest.LogCaptureFixture) -> None:
    """Entering CRITICAL is an error line."""
    r = rig()
    with caplog.at_level(logging.INFO, logger="llmpool.memory.manager"):
        r.ticks(990, 3)
    assert any(
        rec.levelno == logging.ERROR and "-> critical" in rec.getMessage() for rec in caplog.records
    )


def test_cgroup_budget_compares_the_cgroup_working_set() -> None:
    """With a cgroup budget the state follows cgroup_usage, and RSS when it is missing."""
    files = CgroupFiles(
        version=2,
        directory="/x",
        usage_file="/x/memory.current",
        stat_file="/x/memory.stat",
        inactive_key="inactive_file",
    )
    r = rig(limit=MemoryLimit(bytes=1000, source="cgroup v2", cgroup_limit=1000, cgroup=files))
    r.feed.cgroup_usage = 960
    assert r.ticks(100, 3) == [N, N, C]
    r.feed.cgroup_usage = None
    assert r.ticks(100, 3) == [C, C, N]
    report = r.manager.report()
    assert report.limit_source == "cgroup v2"
    assert report.usage_bytes == 100


# --------------------------------------------------------------------------- gc


def test_warn_does_not_collect() -> None:
    """WARN only logs and calls back: no gc.collect()."""
    r = rig()
    r.ticks(750, 20)
    assert r.collector.calls == 0


def test_gc_state_collects_once_per_cooldown() -> None:
    """In GC, one collection runs at entry, none for 30 s of samples, then another."""
    r = rig(gc_cooldown=30.0)
    r.collector.rss_after = 840
    r.ticks(850, 3)
    assert r.collector.calls == 1
    r.ticks(850, 29)
    assert r.collector.calls == 1
    r.ticks(850, 1)
    assert r.collector.calls == 2
    gc_stats = r.manager.report().gc
    assert gc_stats.runs == 2
    assert gc_stats.skipped_cooldown == 29
    assert gc_stats.collected == 84


def test_a_gc_run_is_recorded_with_rss_before_and_after() -> None:
    """The run keeps its start, duration (clock), rss before/after and objects found."""
    r = rig()
    r.collector.cost = 0.25
    r.collector.rss_after = 610
    r.ticks(850, 3)
    last = r.manager.report().gc.last
    assert last is not None
    assert (last.rss_before, last.rss_after, last.collected) == (850, 610, 42)
    assert last.duration == pytest.approx(0.25)
    assert last.trimmed is None
    assert r.manager.report().gc.total_duration == pytest.approx(0.25)


def test_a_costly_collection_is_skipped_until_it_is_under_5_percent() -> None:
    """Cooldown 0: a 1 s collection is not repeated until 20 s have passed since it."""
    r = rig(gc_cooldown=0.0)
    r.collector.cost = 1.0
    r.ticks(850, 3)
    assert r.collector.calls == 1
    r.ticks(850, 19, step=1.0)
    assert r.collector.calls == 1
    assert r.manager.report().gc.skipped_cost == 19
    r.ticks(850, 1, step=2.0)
    assert r.collector.calls == 2


def test_trim_on_gc_calls_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    """trim_on_gc=True calls malloc_trim after the collection and records its answer."""
    calls: list[int] = []

    def fake_trim() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(manager_module, "malloc_trim", fake_trim)
    r = rig(trim_on_gc=True)
    r.ticks(850, 3)
    assert calls == [1]
    last = r.manager.report().gc.last
    assert last is not None and last.trimmed is True


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_malloc_trim_answers_a_bool_on_glibc() -> None:
    """On glibc the real malloc_trim runs and answers whether memory was released (a bool)."""
    assert isinstance(actions_module.malloc_trim(), bool)


@pytest.mark.parametrize(
    "cdll",
    [
        pytest.param(OSError("libc.so.6: cannot open shared object file"), id="no-glibc"),
        pytest.param(object(), id="libc-without-malloc_trim"),
    ],
)
def test_malloc_trim_answers_none_where_missing(
    monkeypatch: pytest.MonkeyPatch, cdll: object
) -> None:
    """Without libc.so.6, or a libc lacking malloc_trim, malloc_trim answers None, not an error."""

    def fake_cdll(name: str) -> object:
        if isinstance(cdll, Exception):
            raise cdll
        return cdll

    monkeypatch.setattr(ctypes, "CDLL", fake_cdll)
    actions_module._malloc_trim_function.cache_clear()
    try:
        assert actions_module.malloc_trim() is None
    finally:
        actions_module._malloc_trim_function.cache_clear()


def test_a_raising_collector_is_logged_and_recorded(caplog: pytest.LogCaptureFixture) -> None:
    """gc.collect() raising does not break the tick; the run shows collected=-1."""
    r = rig()

    def broken() -> int:
        raise RuntimeError("boom")

    r.manager._collect = broken
    with caplog.at_level(logging.WARNING, logger="llmpool.memory.manager"):
        assert r.ticks(850, 3)[-1] is G
    last = r.manager.report().gc.last
    assert last is not None and last.collected == -1
    assert "gc.collect() raised" in caplog.text


# --------------------------------------------------------------------------- callbacks


def test_callbacks_run_in_registration_order_on_each_upward_change() -> None:
    """Two callbacks see WARN, GC, SHED, CRITICAL once each, in order, with a report."""
    r = rig(pressure_repeat=None)
    seen: list[tuple[str, MemoryState, float]] = []
    r.manager.on_pressure(lambda st, rep: seen.append(("a", st, rep.usage)))
    r.manager.on_pressure(lambda st, rep: seen.append(("b", st, rep.usage)))
    for rss in (720, 850, 920, 990):
        r.ticks(rss, 5)
    assert [(name, st) for name, st, _ in seen] == [
        ("a", W),
        ("b", W),
        ("a", G),
        ("b", G),
        ("a", S),
        ("b", S),
        ("a", C),
        ("b", C),
    ]
    assert seen[-1][2] == pytest.approx(0.99)


def test_no_callback_on_the_way_down() -> None:
    """Falling from CRITICAL to NORMAL calls nothing."""
    r = rig()
    r.ticks(990, 3)
    seen: list[MemoryState] = []
    r.manager.on_pressure(lambda st, rep: seen.append(st))
    r.ticks(100, 10)
    assert r.manager.state is N
    assert seen == []


def test_shed_repeats_callbacks_every_pressure_repeat() -> None:
    """While SHED lasts, callbacks run again every pressure_repeat seconds."""
    r = rig(pressure_repeat=10.0)
    seen: list[MemoryState] = []
    r.manager.on_pressure(lambda st, rep: seen.append(st))
    r.ticks(920, 3)
    r.ticks(920, 25)
    assert seen == [S, S, S]


def test_warn_and_gc_do_not_repeat() -> None:
    """Persisting in WARN or GC calls back only once."""
    r = rig(pressure_repeat=1.0)
    seen: list[MemoryState] = []
    r.manager.on_pressure(lambda st, rep: seen.append(st))
    r.ticks(850, 30)
    assert seen == [G]


def test_pressure_repeat_none_calls_back_only_on_entry() -> None:
    """pressure_repeat=None: one call per entry even in CRITICAL."""
    r = rig(pressure_repeat=None)
    seen: list[MemoryState] = []
    r.manager.on_pressure(lambda st, rep: seen.append(st))
    r.ticks(990, 100)
    assert seen == [C]


def test_a_raising_callback_is_counted_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The next callback still runs, the tick completes, one log line per minute."""
    r = rig(pressure_repeat=1.0)
    seen: list[MemoryState] = []

    def bad(state: MemoryState, report: MemoryReport) -> None:
        raise ValueError("callback bug")

    r.manager.on_pressure(bad)
    r.manager.on_pressure(lambda st, rep: seen.append(st))
    with caplog.at_level(logging.WARNING, logger="llmpool.memory.manager"):
        r.ticks(920, 3)
        r.ticks(920, 5)
    assert seen == [S] * 6
    assert r.manager.report().callback_errors == 6
    assert caplog.text.count("pressure callback") == 1
    assert "callback bug" in caplog.text


def test_a_callback_calling_sys_exit_does_not_escape() -> None:
    """SystemExit from a callback is counted like any failure."""
    r = rig()

    def leaves(state: MemoryState, report: MemoryReport) -> None:
        raise SystemExit(3)

    r.manager.on_pressure(leaves)
    assert r.ticks(720, 3)[-1] is W
    assert r.manager.report().callback_errors == 1


def test_on_pressure_returns_the_callback() -> None:
    """on_pressure can be used as a decorator."""
    r = rig()

    @r.manager.on_pressure
    def cb(state: MemoryState, report: MemoryReport) -> None:
        pass

    assert callable(cb)


# --------------------------------------------------------------------------- samples


def test_a_raising_sampler_is_counted_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Failures leave the state, count sample_errors, and log once a minute."""
    r = rig()
    r.ticks(720, 3)
    r.feed.error = OSError("procfs gone")
    with caplog.at_level(logging.WARNING, logger="llmpool.memory.manager"):
        assert r.ticks(720, 5) == [W] * 5
        r.ticks(720, 1, step=61.0)
    assert r.manager.report().sample_errors == 6
    lines = [rec.getMessage() for rec in caplog.records if "sample failed" in rec.getMessage()]
    assert len(lines) == 2
    assert "4 similar suppressed" in lines[1]


def test_a_sampler_returning_junk_counts_as_a_sample_error() -> None:
    """A sampler that returns something without rss is a failed sample."""
    r = rig()
    r.manager._sampler = lambda: None  # type: ignore[assignment,return-value]
    assert r.manager.tick() is N
    assert r.manager.stats()["sample_errors"] >= 1


def test_a_sample_like_object_is_accepted() -> None:
    """Anything with rss works as a sample: psutil's memory_info() result, for one."""
    import psutil

    manager = MemoryManager(sampler=psutil.Process().memory_info, limit=LIMIT)
    assert manager.tick() is N
    snap = manager.snapshot()
    assert snap is not None and snap.rss > 0 and snap.vms >= snap.rss
    assert snap.threads is None


def test_the_thread_guard_counts_unexpected_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error in a thread tick is counted, never raised."""
    r = rig()

    def broken() -> MemoryState:
        raise RuntimeError("bug")

    monkeypatch.setattr(r.manager, "tick", broken)
    r.manager._tick_in_thread()
    assert r.manager.report().sample_errors == 1


def test_snapshot_is_the_published_sample() -> None:
    """snapshot() is None before the first tick, then the latest sample itself."""
    r = rig()
    assert r.manager.snapshot() is None
    r.ticks(321)
    snap = r.manager.snapshot()
    assert snap is not None and snap.rss == 321
    r.ticks(322)
    assert r.manager.snapshot() is not snap


def test_report_before_any_tick_samples_without_publishing() -> None:
    """report() before the thread ran samples once but leaves snapshot() None."""
    r = rig()
    r.feed.rss = 444
    assert r.manager.report().rss == 444
    assert r.manager.snapshot() is None
    r.feed.error = OSError("x")
    assert r.manager.report().rss == 0


# --------------------------------------------------------------------------- admit


def test_admit_never_rejects_unless_configured() -> None:
    """Default reject_on_pressure=False: admit() passes even in CRITICAL."""
    r = rig()
    assert r.ticks(990, 3)[-1] is C
    assert r.manager.admit("chat") is None
    assert r.manager.report().rejected == 0


@pytest.mark.parametrize(("rss", "rejects"), [(720, False), (850, False), (920, True), (990, True)])
def test_admit_rejects_from_shed_up_when_configured(rss: int, rejects: bool) -> None:
    """reject_on_pressure=True: SHED and CRITICAL raise MemoryPressureError, below passes."""
    r = rig(reject_on_pressure=True)
    r.ticks(rss, 3)
    if not rejects:
        r.manager.admit("chat")
        return
    with pytest.raises(MemoryPressureError) as info:
        r.manager.admit("chat")
    assert info.value.state is r.manager.state
    assert info.value.usage == pytest.approx(rss / 1000)
    assert info.value.retryable
    assert "'chat'" in str(info.value)
    assert r.manager.stats()["rejected"] == 1


def test_admit_accepts_again_after_pressure_falls() -> None:
    """Once the state falls below SHED, admit() passes again."""
    r = rig(reject_on_pressure=True)
    r.ticks(990, 3)
    with pytest.raises(MemoryPressureError):
        r.manager.admit()
    r.ticks(100, 3)
    r.manager.admit()


def test_memory_pressure_error_pickles_with_its_state() -> None:
    """The error crosses process boundaries with state and usage intact."""
    r = rig(reject_on_pressure=True)
    r.ticks(990, 3)
    with pytest.raises(MemoryPressureError) as info:
        r.manager.admit()
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.state, copy.usage) == (C, info.value.usage)


# --------------------------------------------------------------------------- accounting


def test_account_keys_operation_and_model_and_stays_bounded() -> None:
    """account() keys on 'operation:model'; beyond max_operations keys go to 'other'."""
    r = rig(max_operations=2)
    r.manager.account("chat", "m1", 100, 10, 0.5)
    r.manager.account("embed", None, 5, 1, 0.1)
    r.manager.account("chat", "m2", 1, 1, 0.1)
    r.manager.track_memory_usage("parse", 2048, 0.01)
    ops = r.manager.report().operations
    assert set(ops) == {"chat:m1", "embed", OTHER}
    assert ops["chat:m1"].bytes_in == 100
    assert ops[OTHER].count == 2
    assert r.manager.report().operations_folded == 2


def test_track_memory_usage_counts_size_as_bytes_in() -> None:
    """The seed's method accounts size as bytes in; a None duration adds no time."""
    r = rig()
    r.manager.track_memory_usage("load", 4096)
    op = r.manager.report().operations["load"]
    assert (op.count, op.bytes_in, op.bytes_max, op.duration_total) == (1, 4096, 4096, 0.0)


def test_inflight_context_manager_adds_and_releases() -> None:
    """inflight(n) counts n bytes inside the block, even when it raises."""
    r = rig()
    with r.manager.inflight(500):
        r.manager.add_inflight(12)
        assert r.manager.report().inflight_bytes == 512
    with pytest.raises(KeyError), r.manager.inflight(100):
        raise KeyError("x")
    assert r.manager.report().inflight_bytes == 12


# --------------------------------------------------------------------------- reports


def test_report_has_every_field_and_round_trips_to_json() -> None:
    """The report carries sizes, limit, state, trend, gc, operations, gauges, errors."""
    r = rig()
    r.manager.register_gauge("pool", lambda: {"in_use": 2, "idle": 8})
    r.manager.account("chat", "m", 10, 20, 0.3)
    for rss in (100, 200, 300, 400):
        r.ticks(rss)
    report = r.manager.report()
    assert (report.rss, report.vms, report.peak_rss) == (400, 800, 400)
    assert (report.limit, report.limit_source, report.host_total) == (1000, "config", 10_000)
    assert report.usage == pytest.approx(0.4)
    assert report.state is N
    assert report.growth == 300
    assert report.slope == pytest.approx(100.0)
    assert report.window == pytest.approx(3.0)
    assert report.samples == 4
    assert (report.threads, report.open_fds) == (3, 9)
    assert report.gauges == {"pool": {"in_use": 2, "idle": 8}}
    assert len(report.gc_counts) == 3 and len(report.gc_collections) == 3
    assert report.running is False
    data = json.loads(json.dumps(report.to_dict()))
    assert data["state"] == "normal"
    assert data["operations"]["chat:m"]["bytes_out"] == 20
    assert data["gauges"]["pool"]["idle"] == 8
    assert data["gc"]["runs"] == 0


def test_report_is_immutable() -> None:
    """Reports are frozen values: fields and their mappings cannot be changed."""
    r = rig()
    r.manager.account("chat", "m", 1, 1, 0.1)
    report = r.manager.report()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        report.rss = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        report.operations["x"] = report.operations["chat:m"]  # type: ignore[index]


def test_peak_and_growth_follow_the_history() -> None:
    """peak_rss keeps the maximum; growth is now minus the first sample."""
    r = rig()
    for rss in (300, 900, 500):
        r.ticks(rss)
    report = r.manager.report()
    assert (report.peak_rss, report.growth) == (900, 200)


def test_history_is_bounded() -> None:
    """The trend window keeps at most `history` samples."""
    r = rig(history=5)
    for i in range(50):
        r.ticks(100 + i)
    report = r.manager.report()
    assert report.window == pytest.approx(4.0)
    assert report.samples == 50
    assert len(r.manager._history) == 5


def test_to_text_names_the_essentials() -> None:
    """to_text() shows state, usage, limit source, gc, gauges, operations and errors."""
    r = rig()
    r.manager.register_gauge("pool", lambda: {"in_use": 1})
    r.manager.account("chat", "m", 1024, 0, 0.1)
    r.collector.rss_after = 800
    r.ticks(850, 3)
    text = r.manager.report().to_text()
    for needle in (
        "state gc",
        "85.0% of 1000 B (config)",
        "gc: 1 runs",
        "gauge pool: in_use=1",
        "op chat:m: 1 calls, in 1.0 KiB",
        "errors: samples 0",
    ):
        assert needle in text, needle


def test_a_raising_gauge_is_skipped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    """A gauge that raises is left out of the report and counted; the others stay."""
    r = rig()
    r.manager.register_gauge("bad", lambda: {"x": 1 // 0})
    r.manager.register_gauge("good", lambda: {"y": 2})
    with caplog.at_level(logging.WARNING, logger="llmpool.memory.manager"):
        report = r.manager.report()
    assert report.gauges == {"good": {"y": 2}}
    assert report.gauge_errors == 1
    assert "gauge 'bad' raised" in caplog.text


def test_unregister_gauge_removes_it() -> None:
    """An unregistered gauge is no longer called."""
    r = rig()
    r.manager.register_gauge("pool", lambda: {"idle": 1})
    r.manager.unregister_gauge("pool")
    r.manager.unregister_gauge("absent")
    assert r.manager.report().gauges == {}


def test_stats_is_compact_and_does_not_call_gauges() -> None:
    """stats() has the summary keys and never calls a gauge."""
    r = rig()
    called: list[int] = []
    r.manager.register_gauge("pool", lambda: called.append(1) or {"idle": 0})
    r.ticks(850, 3)
    stats = r.manager.stats()
    assert called == []
    assert stats["state"] == "gc"
    assert stats["limit_source"] == "config"
    assert stats["gc_runs"] == 1
    assert {"rss_mb", "limit_mb", "usage", "peak_mb", "sample_errors", "running"} <= set(stats)
    json.dumps(stats)


def test_tracemalloc_top_starts_tracing_and_lists_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """tracemalloc_top() starts tracing if needed (and says so), then names source lines."""
    was_tracing = tracemalloc.is_tracing()
    r = rig()
    try:
        with caplog.at_level(logging.WARNING, logger="llmpool.memory.manager"):
            r.manager.tracemalloc_top(3)
        assert tracemalloc.is_tracing()
        if not was_tracing:
            assert "tracemalloc started" in caplog.text
        hoard = [bytearray(1000) for _ in range(200)]
        top = r.manager.tracemalloc_top(3)
        assert 1 <= len(top) <= 3
        location, size, count = top[0]
        assert ":" in location and size > 0 and count > 0
        assert r.manager.report().tracemalloc_current is not None
        del hoard
    finally:
        if not was_tracing:
            tracemalloc.stop()


# --------------------------------------------------------------------------- construction


def test_default_construction_discovers_a_limit_and_samples_this_process() -> None:
    """With no injection the manager finds a budget and a real sample."""
    manager = MemoryManager()
    assert manager.limit.bytes > 0
    assert manager.tick() in set(MemoryState)
    snap = manager.snapshot()
    assert snap is not None and snap.rss > 0
    assert "MemoryManager state=" in repr(manager)


def test_close_stops_and_releases_the_sampler_files() -> None:
    """close() on a never-started manager closes the default sampler's descriptors;
    the next tick reopens them."""
    manager = MemoryManager()
    manager.tick()
    manager.close()
    assert manager._sampler._fds == {}  # type: ignore[attr-defined]
    manager.tick()
    assert manager.report().sample_errors == 0
    manager.close()


def test_config_max_memory_mb_sets_a_config_budget() -> None:
    """max_memory_mb becomes the budget, source 'config'."""
    manager = MemoryManager(MemoryConfig(max_memory_mb=64))
    assert (manager.limit.bytes, manager.limit.source) == (64 * 1024 * 1024, "config")


@pytest.mark.parametrize("value", [0, -1.0, "soon", True])
def test_pressure_repeat_is_validated(value: object) -> None:
    """pressure_repeat must be a positive number or None."""
    with pytest.raises(ConfigError, match="pressure_repeat"):
        MemoryConfig(pressure_repeat=value)  # type: ignore[arg-type]


def test_pressure_repeat_defaults_to_30_seconds() -> None:
    """The repeat interval for SHED/CRITICAL callbacks defaults to 30 s."""
    assert MemoryConfig().pressure_repeat == 30.0
    assert MemoryConfig(pressure_repeat=None).pressure_repeat is None
