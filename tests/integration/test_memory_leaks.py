"""No leak on the call path: memory that llmpool's code allocates during many calls,
and that is still alive after ``gc.collect()``, stays under a small budget.

The same measuring helper is run twice: on llmpool as it is (the growth must be
below the budget) and with a deliberately leaky change (it must be above), so
the budget is shown to catch a leak of 89 bytes per call.

The mock server runs in a child process (``python -m llmpool.cli mock-server``):
tracing then sees only the client's allocations, runs faster, and nothing the
server records can be mistaken for growth.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

import llmpool
from llmpool.testing import DEFAULT_REPLY

#: Calls before the first snapshot: connections opened, caches and bounded tables filled.
WARMUP_CALLS = 300
#: Calls between the two snapshots (half JSON, half streamed).
MEASURED_CALLS = 1000
THREADS = 4
#: A memory manager tick every this many calls (on the calling threads, so no
#: background thread is half-way through a sample when a snapshot is taken).
TICK_EVERY = 20
#: Growth allowed over MEASURED_CALLS: 64 KiB, that is 65 bytes per call.
BUDGET = 64 * 1024

HI = [{"role": "user", "content": "hi"}]

_PACKAGE = os.path.dirname(llmpool.__file__)
#: Traces whose innermost frame is llmpool's code (attrs-generated methods of
#: llmpool's classes included), the mock server's code excluded.
LLMPOOL_FILTERS = (
    tracemalloc.Filter(True, os.path.join(_PACKAGE, "*")),
    tracemalloc.Filter(True, "<attrs generated * llmpool.*>"),
    tracemalloc.Filter(False, os.path.join(_PACKAGE, "testing", "*")),
)


@dataclass(frozen=True)
class Growth:
    """Bytes allocated by llmpool during the measured calls and still alive, and
    the source lines holding most of them (for the failure message)."""

    bytes: int
    top: tuple[str, ...]

    def explain(self) -> str:
        lines = "\n  ".join(self.top)
        return f"llmpool grew by {self.bytes} B over {MEASURED_CALLS} calls:\n  {lines}"


def one_call(client: llmpool.Client, index: int) -> None:
    """A JSON call for even *index*, a streamed one (read to the end) for odd."""
    if index % 2:
        with client.chat("mock-model", HI, stream=True) as stream:
            for _chunk in stream:
                pass
        assert stream.text == DEFAULT_REPLY
    else:
        assert client.chat("mock-model", HI).text == DEFAULT_REPLY


def run_calls(
    client: llmpool.Client,
    memory: llmpool.MemoryManager,
    executor: ThreadPoolExecutor,
    calls: int,
) -> None:
    """*calls* calls spread over THREADS threads, with a memory manager tick every
    TICK_EVERY calls; every failure surfaces through ``result()``."""

    def work(first: int) -> None:
        for index in range(first, calls, THREADS):
            one_call(client, index)
            if index % TICK_EVERY == 0:
                memory.tick()

    for future in [executor.submit(work, first) for first in range(THREADS)]:
        future.result()


def _llmpool_snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(LLMPOOL_FILTERS)


def measure_growth(client: llmpool.Client, memory: llmpool.MemoryManager) -> Growth:
    """Warm up, start tracing, make MEASURED_CALLS more calls; return what
    llmpool's code allocated during them and still holds after ``gc.collect()``.

    Tracing starts after the warm-up (tracing makes every call 2 to 4 times
    slower). What was allocated before is invisible, so the figure is an upper
    bound of the net growth: a bounded ring that recycles its entries during
    the measured calls counts them all, up to its size.
    """
    with ThreadPoolExecutor(THREADS, thread_name_prefix="leak-test") as executor:
        run_calls(client, memory, executor, WARMUP_CALLS)
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start(1)
        try:
            before = _llmpool_snapshot()
            run_calls(client, memory, executor, MEASURED_CALLS)
            after = _llmpool_snapshot()
        finally:
            if started:
                tracemalloc.stop()
    diff = after.compare_to(before, "lineno")
    return Growth(sum(stat.size_diff for stat in diff), tuple(str(stat) for stat in diff[:8]))


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """The base URL of a mock server running in a child process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "llmpool.cli", "mock-server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()  # "" if the server died: no hang
        assert url.startswith("http://127.0.0.1:"), f"mock server did not start: {url!r}"
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def measure(server_url: str) -> Iterator[Callable[[], tuple[Growth, dict[str, Any]]]]:
    """Run measure_growth on a fresh client with a memory manager; also return
    the client's statistics, so a test can check the calls really happened."""
    memory = llmpool.MemoryManager(llmpool.MemoryConfig(max_memory_mb=8192, history=16))
    client = llmpool.Client(server_url, api_key="sk-leak-test", memory=memory)

    def run() -> tuple[Growth, dict[str, Any]]:
        growth = measure_growth(client, memory)
        return growth, client.stats()

    try:
        yield run
    finally:
        client.close()
        memory.close()


def test_calls_leave_no_growth_attributable_to_llmpool(
    measure: Callable[[], tuple[Growth, dict[str, Any]]],
) -> None:
    """1,000 calls (JSON and streamed, 4 threads) after a warm-up grow llmpool's memory < 64 KiB."""
    growth, stats = measure()
    assert stats["client"]["calls"] == WARMUP_CALLS + MEASURED_CALLS
    assert stats["client"]["errors"] == 0
    assert stats["pool"]["in_use"] == 0
    assert stats["memory"]["samples"] >= (WARMUP_CALLS + MEASURED_CALLS) // TICK_EVERY
    assert growth.bytes < BUDGET, growth.explain()


def test_the_budget_catches_a_leak_of_89_bytes_per_call(
    measure: Callable[[], tuple[Growth, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change that keeps each call's Idempotency-Key (a str of 89 B) exceeds the budget."""
    kept: list[str] = []
    prepare = llmpool.Client._prepare

    def leaky_prepare(self: llmpool.Client, *args: Any) -> llmpool.Request:
        request = prepare(self, *args)
        kept.append(request.headers["Idempotency-Key"])
        return request

    monkeypatch.setattr(llmpool.Client, "_prepare", leaky_prepare)
    growth, _ = measure()
    assert len(kept) == WARMUP_CALLS + MEASURED_CALLS
    assert growth.bytes > BUDGET, growth.explain()
    assert os.path.join("llmpool", "request_path.py") in growth.top[0], growth.explain()
