"""Per-operation accounting: counters, bounded keys, in-flight bytes, thread safety."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from llmpool.memory import OTHER, OperationStats
from llmpool.memory.accounting import Accounting


def test_counters_accumulate_per_key() -> None:
    """count, bytes in/out, the largest call and durations add up per key."""
    acc = Accounting(10)
    acc.record("chat:m", 100, 20, 0.5)
    acc.record("chat:m", 300, 50, 0.25)
    acc.record("embed:e", 7, 1, None)
    snap = acc.snapshot()
    assert snap["chat:m"] == OperationStats(
        count=2, bytes_in=400, bytes_out=70, bytes_max=350, duration_total=0.75, duration_max=0.5
    )
    assert snap["embed:e"].duration_total == 0.0
    assert snap["embed:e"].count == 1


def test_keys_beyond_the_bound_fold_into_other() -> None:
    """With max_keys=3, the 4th and later distinct keys all land in 'other'."""
    acc = Accounting(3)
    for i in range(100):
        acc.record(f"chat:model-{i}", 1, 0, 0.0)
    snap = acc.snapshot()
    assert len(snap) == 4
    assert snap[OTHER].count == 97
    assert acc.folded == 97
    acc.record("chat:model-1", 1, 0, 0.0)
    assert acc.snapshot()["chat:model-1"].count == 2


def test_table_stays_bounded_under_unique_keys() -> None:
    """A stream of 10,000 unique keys never grows the table beyond max_keys + 1."""
    acc = Accounting(256)
    for i in range(10_000):
        acc.record(f"k{i}", 1, 1, 0.0)
    assert len(acc) == 257


def test_inflight_adds_and_releases() -> None:
    """add_inflight moves the in-flight total up and down."""
    acc = Accounting(4)
    acc.add_inflight(1000)
    acc.add_inflight(24)
    acc.add_inflight(-1000)
    assert acc.inflight == 24


def test_concurrent_records_lose_nothing() -> None:
    """8 threads x 2,000 records: every count and byte is there."""
    acc = Accounting(8)

    def work(n: int) -> None:
        for _ in range(2000):
            acc.record(f"op{n % 4}", 3, 1, 0.001)
            acc.add_inflight(5)
            acc.add_inflight(-5)

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(work, n) for n in range(8)]:
            future.result()
    snap = acc.snapshot()
    assert sum(op.count for op in snap.values()) == 16_000
    assert sum(op.bytes_in for op in snap.values()) == 48_000
    assert acc.inflight == 0


def test_reset_forgets_everything() -> None:
    """reset() (used in a forked child) empties the table and counters."""
    acc = Accounting(1)
    acc.record("a", 1, 1, 1.0)
    acc.record("b", 1, 1, 1.0)
    acc.add_inflight(3)
    acc.reset()
    assert (acc.snapshot(), acc.folded, acc.inflight) == ({}, 0, 0)
