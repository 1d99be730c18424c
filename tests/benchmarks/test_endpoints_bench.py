"""Endpoint groups: what routing costs, and what a dead endpoint costs.

(a) Routing overhead per call: ``Client.chat`` over a group of three healthy
endpoints beside the single-endpoint client, both over a socket-free canned
transport (every request gets the same already-read 700-byte answer), so the
difference is the group's own work (pick, per-endpoint shaping, record) and
not network noise; and the health book's ``pick`` + ``record`` alone.

(b) One of three endpoints refusing connections, 16 threads, against the
canned fast server (``scripts/canned_server.py``, two processes, one per live
endpoint): every call must succeed, the dead endpoint must get at most one
call (a probe) per cool-down after its first cool-down, and the throughput is
compared with the same run over the two live endpoints alone.

Each comparison's second row also runs one round of the first row's work
before each of its own rounds (``setup`` of ``pedantic``) and reports the
*interleaved* figure, which sees the same machine load. A summary is printed
after the module. Run::

    python -m pytest tests/benchmarks/test_endpoints_bench.py --benchmark-only -p no:randomly
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import (
    CANNED_SERVER_SCRIPT,
    CannedTransport,
    _free_port,
    added_per_call,
    in_threads,
    load_canned_server_module,
    measure_interleaved,
    print_lines,
    rounds_of,
)

import llmpool
from llmpool.endpoints import HealthBook
from llmpool.endpoints.routing import default

MESSAGES = [{"role": "user", "content": "hi"}]
CALLS_PER_ROUND = 200  # (a): calls per timed round, so one round is ~10 ms
THREADS = 16
LIVE_CALLS_PER_ROUND = 960  # (b): 60 per thread
COOLDOWN = 0.2  # (b): every cool-down this long (no growth), the most probes

#: Medians (seconds per round) and the interleaved medians, by group and row.
RESULTS: dict[str, dict[str, dict[str, float]]] = {}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the comparisons once the module has run."""
    yield
    print_lines(request, _summary_lines())


def _summary_lines() -> list[str]:
    lines = ["endpoint groups (medians; side by side | interleaved):"]
    routing = RESULTS.get("routing overhead per call (canned transport)", {})
    if "single endpoint" in routing and "group of 3" in routing:
        one, three = routing["single endpoint"], routing["group of 3"]
        per = CALLS_PER_ROUND * 1e-6  # seconds per round -> us per call
        side, mixed = added_per_call(three, one, CALLS_PER_ROUND)
        lines.append(
            f"  routing overhead: {side:+.2f} us | {mixed:+.2f} us per call "
            f"(single {one['median'] / per:.2f} us, group of 3 {three['median'] / per:.2f} us | "
            f"single interleaved {three['interleaved_median'] / per:.2f} us)"
        )
    book = RESULTS.get("health book pick + record", {}).get("pick + record")
    if book:
        lines.append(f"  HealthBook.pick + record: {book['median'] / CALLS_PER_ROUND * 1e6:.2f} us")
    live = RESULTS.get("16 threads, one of three endpoints refusing", {})
    if "two live endpoints" in live and "one of three refusing" in live:
        two, dead = live["two live endpoints"], live["one of three refusing"]
        side = two["median"] / dead["median"]
        mixed = dead["interleaved_median"] / dead["median"]
        lines.append(
            f"  throughput with a dead endpoint / without it: {side:.3f}x | {mixed:.3f}x "
            f"({LIVE_CALLS_PER_ROUND / dead['median']:,.0f}/s vs "
            f"{LIVE_CALLS_PER_ROUND / two['median']:,.0f}/s | "
            f"{LIVE_CALLS_PER_ROUND / dead['interleaved_median']:,.0f}/s)"
        )
    for line in DEAD_REPORT:
        lines.append("  " + line)
    return lines if len(lines) > 1 else []


#: The dead endpoint's counts, for the summary.
DEAD_REPORT: list[str] = []


# --------------------------------------------------------------------------- (a)


@pytest.fixture(scope="module")
def canned_body() -> bytes:
    body: bytes = load_canned_server_module().chat_completion()
    return body


@pytest.fixture(scope="module")
def single(canned_body: bytes) -> Iterator[llmpool.Client]:
    with llmpool.Client(
        "http://127.0.0.1:9/v1", api_key="k", pool=CannedTransport(canned_body)
    ) as client:
        yield client


@pytest.fixture(scope="module")
def group(canned_body: bytes) -> Iterator[llmpool.Client]:
    endpoints = [
        llmpool.Endpoint(name=f"e{i}", base_url=f"http://127.0.0.{i + 1}:9/v1", api_key="k")
        for i in range(3)
    ]
    with llmpool.Client(endpoints=endpoints, pool=CannedTransport(canned_body)) as client:
        yield client


@pytest.mark.parametrize("row", ["single endpoint", "group of 3"])
def test_routing_overhead_per_call(
    benchmark: Any, row: str, single: llmpool.Client, group: llmpool.Client
) -> None:
    """Client.chat over three healthy endpoints beside the single-endpoint client,
    no network: 200 calls per round."""
    benchmark.group = "routing overhead per call (canned transport)"
    one = rounds_of(CALLS_PER_ROUND, lambda: single.chat("m", MESSAGES))
    three = rounds_of(CALLS_PER_ROUND, lambda: group.chat("m", MESSAGES))
    assert group.chat("m", MESSAGES).text == single.chat("m", MESSAGES).text
    if row == "single endpoint":
        measure_interleaved(RESULTS, benchmark, row, one, None, rounds=300)
    else:
        measure_interleaved(RESULTS, benchmark, row, three, one, rounds=300)
        answered = {n: e["requests"] for n, e in group.stats()["endpoints"].items()}
        assert all(answered.values()), answered  # every endpoint took calls
        benchmark.extra_info["requests_by_endpoint"] = answered


def test_health_book_pick_and_record(benchmark: Any) -> None:
    """The health book alone: pick among three healthy endpoints, record a success."""
    benchmark.group = "health book pick + record"
    endpoints = [
        llmpool.Endpoint(name=f"e{i}", base_url=f"http://127.0.0.{i + 1}:9/v1") for i in range(3)
    ]
    book = HealthBook(endpoints, llmpool.HealthConfig(), default)
    names = book.names

    def once() -> None:  # as a call's attempt does: pick, then record a success
        pick = book.pick(names)
        book.record_ok(pick.name or "", 0.001)

    measure_interleaved(
        RESULTS, benchmark, "pick + record", rounds_of(CALLS_PER_ROUND, once), None, rounds=300
    )
    assert all(e["in_flight"] == 0 for e in book.stats().values())


# --------------------------------------------------------------------------- (b)


@pytest.fixture(scope="module")
def live_urls() -> Iterator[list[str]]:
    """Two canned servers (epoll mode), each in its own process."""
    processes = []
    urls = []
    try:
        for _ in range(2):
            port = _free_port()
            processes.append(
                subprocess.Popen(
                    [sys.executable, str(CANNED_SERVER_SCRIPT), "--port", str(port)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}/v1")
        for url in urls:
            _wait_for(url)
        yield urls
    finally:
        for process in processes:
            process.kill()
            process.wait(10)
            if process.stdin is not None:
                process.stdin.close()


def _wait_for(url: str) -> None:
    import socket

    port = int(url.rsplit(":", 1)[1].removesuffix("/v1"))
    deadline = time.monotonic() + 10.0
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("a canned server did not start") from None
            time.sleep(0.02)


class FirstCooldown(llmpool.LLMPlugin):
    """Notes the dead endpoint's routed calls and the time when it first cooled down."""

    name = "first_cooldown"

    def __init__(self) -> None:
        self.client: llmpool.Client | None = None
        self.requests_then: int | None = None
        self.at: float | None = None
        self._lock = threading.Lock()  # guards requests_then and at

    def on_endpoint_state(self, change: Any) -> None:
        if change.endpoint != "dead" or change.new != "cooling" or self.client is None:
            return
        with self._lock:
            if self.at is None:
                self.at = time.monotonic()
                self.requests_then = self.client.stats()["endpoints"]["dead"]["requests"]


def _group_client(urls: list[str], *, dead: bool, plugin: FirstCooldown | None) -> llmpool.Client:
    endpoints = [
        llmpool.Endpoint(name=f"live{i}", base_url=url, api_key="k") for i, url in enumerate(urls)
    ]
    if dead:
        port = _free_port()  # bound to learn it, then closed: it refuses connections
        endpoints.insert(
            0, llmpool.Endpoint(name="dead", base_url=f"http://127.0.0.1:{port}/v1", api_key="k")
        )
    return llmpool.Client(
        endpoints=endpoints,
        health=llmpool.HealthConfig(cooldown=COOLDOWN, max_cooldown=COOLDOWN),
        pool=llmpool.PoolConfig(max_connections=THREADS, max_keepalive=THREADS),
        retry=llmpool.RetryPolicy(max_attempts=3),
        plugins=[plugin] if plugin is not None else None,
    )


@pytest.mark.parametrize("row", ["two live endpoints", "one of three refusing"])
def test_a_dead_endpoint_under_sixteen_threads(
    benchmark: Any, row: str, live_urls: list[str]
) -> None:
    """16 threads, 960 calls per round: every call succeeds, the dead endpoint gets
    at most one probe per cool-down after its first, throughput beside the live pair."""
    benchmark.group = "16 threads, one of three endpoints refusing"
    plugin = FirstCooldown()
    per_thread = LIVE_CALLS_PER_ROUND // THREADS
    with (
        _group_client(live_urls, dead=False, plugin=None) as live,
        ThreadPoolExecutor(max_workers=THREADS) as executor,
    ):
        run_live = in_threads(executor, THREADS, per_thread, lambda: live.chat("m", MESSAGES))
        if row == "two live endpoints":
            measure_interleaved(RESULTS, benchmark, row, run_live, None, rounds=15)
            return
        with_dead = _group_client(live_urls, dead=True, plugin=plugin)
        plugin.client = with_dead
        run_dead = in_threads(executor, THREADS, per_thread, lambda: with_dead.chat("m", MESSAGES))
        started = time.monotonic()
        measure_interleaved(RESULTS, benchmark, row, run_dead, run_live, rounds=15)
        ended = time.monotonic()
        stats = with_dead.stats()
        with_dead.close()
    client, per = stats["client"], stats["endpoints"]
    dead = per["dead"]
    # 100% success: each call ended with one good attempt at a live endpoint.
    assert client["errors"] == 0
    assert (
        sum(per[n]["requests"] - per[n]["failures"] for n in ("live0", "live1")) == client["calls"]
    )
    assert dead["requests"] == dead["failures"] and dead["cooldowns"] >= 1
    assert plugin.at is not None and plugin.requests_then is not None
    probes = dead["requests"] - plugin.requests_then
    periods = (ended - plugin.at) / COOLDOWN
    # After the first cool-down: one probe per cool-down at most (each failed
    # probe begins the next one), and so at most one per period of time.
    assert probes <= dead["cooldowns"] - 1
    assert probes <= periods + 1
    benchmark.extra_info.update(
        dead_requests=dead["requests"],
        dead_before_first_cooldown=plugin.requests_then,
        probes=probes,
        cooldowns=dead["cooldowns"],
        cooldown_periods=round(periods, 1),
        run_seconds=round(ended - started, 2),
    )
    DEAD_REPORT.append(
        f"dead endpoint: {dead['requests']} calls, {plugin.requests_then} before its first "
        f"cool-down, then {probes} probes in {periods:.1f} cool-down periods "
        f"({dead['cooldowns']} cool-downs); {client['calls']} calls, 0 errors"
    )
