"""The straight path: Client.chat beside raw urllib3 + json.loads against a fast server.

The server is ``scripts/canned_server.py`` in its own process (fixture
``canned_server``): it answers every call with the same pre-built bytes (a
700-byte ``chat.completion``, or 42 SSE events and ``[DONE]``) at about 25-35
us of its own CPU, so the time of a call is almost all client work, unlike
against the in-process mock server. The raw baseline sends the headers and
body llmpool sends (a fixed ``Idempotency-Key`` where llmpool makes a fresh
one) and decodes with ``json.loads`` (streams: a minimal SSE split).

Rows of one comparison share a pytest-benchmark group; each llmpool row runs
after its urllib3 row and records the ratio in ``extra_info``; a summary is
printed after the module. Ratios are of medians: per call, llmpool's median
time / urllib3's; throughput, urllib3's median round time / llmpool's (the
same calls per round), i.e. llmpool's calls per second / urllib3's. On a busy
machine the load drifts between two rows, so each llmpool row also runs one
untimed-by-pytest-benchmark urllib3 round before each of its rounds (the
``setup`` of ``pedantic``), times it itself and reports the *interleaved*
ratio of the two medians, which sees the same load. CPU per call is
``time.process_time()`` over all rounds (warm-up included) / calls, the
interleaved urllib3 rounds' CPU subtracted from llmpool's. Run::

    python -m pytest tests/benchmarks/test_straight_path_bench.py --benchmark-only -p no:randomly
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
import pytest
import urllib3
from conftest import CannedServer, in_threads, print_lines

import llmpool

MESSAGES = [{"role": "user", "content": "hi"}]
# The bodies llmpool sends (captured from the wire), byte for byte.
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
STREAM_BODY = (
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],'
    b'"stream":true,"stream_options":{"include_usage":true}}'
)
# The headers llmpool sends, in its order (urllib3 adds Host, Accept-Encoding and
# Content-Length for both).
HEADERS = {
    "User-Agent": "llmpool/0.1.0",
    "Accept": "application/json",
    "Content-Type": "application/json",
    "Authorization": "Bearer k",
    "Idempotency-Key": "llmpool-9a61f8828ca048ccbb879e83d1f92c2e",
}
STREAM_HEADERS = {**HEADERS, "Accept": "text/event-stream"}
MAX_THREADS = 32
CALLS_PER_ROUND = 960  # threaded rounds: the same work at 8 and 32 threads

#: Medians (seconds) and CPU per call, by group and contender, for the ratios.
RESULTS: dict[str, dict[str, dict[str, float]]] = {}


@pytest.fixture(scope="module")
def client(canned_server: CannedServer) -> Iterator[llmpool.Client]:
    pool = llmpool.PoolConfig(max_connections=MAX_THREADS, max_keepalive=MAX_THREADS)
    with llmpool.Client(canned_server.base_url, api_key="k", pool=pool) as c:
        yield c


@pytest.fixture(scope="module")
def manager() -> Iterator[urllib3.PoolManager]:
    pm = urllib3.PoolManager(maxsize=MAX_THREADS, block=True)
    yield pm
    pm.clear()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the ratios once every comparison of the module has run."""
    yield
    print_lines(request, _summary_lines())


def _summary_lines() -> list[str]:
    lines = ["straight path, llmpool / urllib3 (medians; rows side by side | interleaved):"]
    for group, rows in RESULTS.items():
        if "llmpool" not in rows or "urllib3" not in rows:
            continue
        ours, raw = rows["llmpool"], rows["urllib3"]
        calls = int(ours["calls"])
        kind = "throughput" if calls > 1 else "time per call"
        side = _ratio(ours, calls, raw)
        mixed = _ratio(ours, calls, interleaved=True)
        lines.append(
            f"  {group}: {kind} {side:.2f}x | {mixed:.2f}x "
            f"(llmpool {_per_call(ours, calls)}, urllib3 {_per_call(raw, calls)} | "
            f"{_per_call(ours, calls, 'interleaved_median')}; "
            f"CPU/call llmpool {ours['cpu_us']:.0f} us, "
            f"urllib3 {raw['cpu_us']:.0f} | {ours['interleaved_cpu_us']:.0f} us)"
        )
    return lines if len(lines) > 1 else []


def _per_call(row: dict[str, float], calls: int, key: str = "median") -> str:
    """A row's median as calls per second (threaded rounds) or us per call."""
    if calls > 1:
        return f"{calls / row[key]:,.0f}/s"
    return f"{row[key] * 1e6:,.0f} us"


class Interleaved:
    """Runs and times one round of the baseline before each measured round."""

    def __init__(self, baseline: Callable[[], object] | None) -> None:
        self.baseline = baseline
        self.times: list[float] = []
        self.cpu = 0.0

    def __call__(self) -> None:
        if self.baseline is None:
            return
        cpu, started = time.process_time(), time.perf_counter()
        self.baseline()
        self.times.append(time.perf_counter() - started)
        self.cpu += time.process_time() - cpu


def _measure(
    benchmark: Any,
    name: str,
    run: Callable[[], object],
    baseline: Callable[[], object],
    rounds: int,
    calls: int = 1,
) -> None:
    """Benchmark *run* (rounds of *calls* calls); on llmpool's row, interleave *baseline*."""
    warmup = max(1, rounds // 10)
    interleaved = Interleaved(baseline if name == "llmpool" else None)
    started = time.process_time()
    benchmark.pedantic(run, setup=interleaved, rounds=rounds, warmup_rounds=warmup)
    cpu = time.process_time() - started - interleaved.cpu
    if benchmark.stats is None:  # --benchmark-disable: the call ran once, nothing to record
        return
    _record(benchmark, name, cpu / (rounds + warmup) / calls * 1e6, calls, interleaved)


def _record(benchmark: Any, name: str, cpu_us: float, calls: int, interleaved: Interleaved) -> None:
    """Keep this row's median and CPU per call; on llmpool's row, the ratios."""
    median = benchmark.stats.stats.median
    row = {"median": median, "cpu_us": cpu_us, "calls": calls}
    rows = RESULTS.setdefault(benchmark.group, {})
    rows[name] = row
    benchmark.extra_info["cpu_us_per_call"] = round(cpu_us, 1)
    if calls > 1:
        benchmark.extra_info["calls_per_s"] = round(calls / median)
    if interleaved.times:
        cpu_baseline = interleaved.cpu / len(interleaved.times) / calls * 1e6
        row["interleaved_median"] = statistics.median(interleaved.times)
        row["interleaved_cpu_us"] = cpu_baseline
        benchmark.extra_info["interleaved_urllib3_median_s"] = row["interleaved_median"]
        benchmark.extra_info["interleaved_urllib3_cpu_us_per_call"] = round(cpu_baseline, 1)
        benchmark.extra_info["interleaved_ratio"] = round(_ratio(row, calls, interleaved=True), 3)
    if name == "llmpool" and "urllib3" in rows:
        benchmark.extra_info["ratio_to_urllib3_row"] = round(_ratio(row, calls, rows["urllib3"]), 3)


def _ratio(
    ours: dict[str, float],
    calls: int,
    raw: dict[str, float] | None = None,
    *,
    interleaved: bool = False,
) -> float:
    """Time per call: llmpool / urllib3; throughput (calls > 1): urllib3 / llmpool."""
    theirs = ours["interleaved_median"] if interleaved else raw["median"]  # type: ignore[index]
    return theirs / ours["median"] if calls > 1 else ours["median"] / theirs


def _raw_chat(pm: urllib3.PoolManager, url: str) -> Callable[[], str]:
    def call() -> str:
        response = pm.request("POST", url, body=BODY, headers=HEADERS)
        data = json.loads(response.data)
        return str(data["choices"][0]["message"]["content"])

    return call


def _raw_stream(pm: urllib3.PoolManager, url: str) -> Callable[[], str]:
    def call() -> str:
        response = pm.request(
            "POST", url, body=STREAM_BODY, headers=STREAM_HEADERS, preload_content=False
        )
        parts = []
        buffer = b""
        for piece in response.read_chunked():
            buffer += piece
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"data: ") and line != b"data: [DONE]":
                    choices = json.loads(line[6:])["choices"]
                    if choices:
                        parts.append(choices[0]["delta"].get("content") or "")
        response.release_conn()
        return "".join(parts)

    return call


def _llmpool_chat(client: llmpool.Client) -> Callable[[], str]:
    def call() -> str:
        return client.chat("m", MESSAGES).text

    return call


def _llmpool_stream(client: llmpool.Client) -> Callable[[], str]:
    def call() -> str:
        with client.chat("m", MESSAGES, stream=True) as stream:
            return "".join(chunk.delta for chunk in stream)

    return call


@pytest.mark.parametrize("name", ["urllib3", "llmpool"])
def test_one_thread_json(
    benchmark: Any,
    name: str,
    canned_server: CannedServer,
    client: llmpool.Client,
    manager: urllib3.PoolManager,
) -> None:
    """One thread, one non-streamed chat call, decoded."""
    benchmark.group = "straight path: 1 thread, JSON"
    url = canned_server.url("/v1/chat/completions")
    raw = _raw_chat(manager, url)
    call = _llmpool_chat(client) if name == "llmpool" else raw
    assert call() == canned_server.text
    _measure(benchmark, name, call, raw, rounds=3_000)


@pytest.mark.parametrize("name", ["urllib3", "llmpool"])
def test_one_thread_stream(
    benchmark: Any,
    name: str,
    canned_server: CannedServer,
    client: llmpool.Client,
    manager: urllib3.PoolManager,
) -> None:
    """One thread, one streamed chat call of 42 events read to the end."""
    benchmark.group = "straight path: 1 thread, stream (42 events)"
    url = canned_server.url("/v1/chat/completions")
    raw = _raw_stream(manager, url)
    call = _llmpool_stream(client) if name == "llmpool" else raw
    assert call() == canned_server.text
    _measure(benchmark, name, call, raw, rounds=1_500)


@pytest.mark.parametrize("name", ["urllib3", "llmpool"])
@pytest.mark.parametrize("threads", [8, 32])
def test_threads_json(
    benchmark: Any,
    name: str,
    threads: int,
    canned_server: CannedServer,
    client: llmpool.Client,
    manager: urllib3.PoolManager,
) -> None:
    """Threads sharing one client (or one PoolManager): 960 JSON calls per round."""
    benchmark.group = f"straight path: {threads} threads, JSON ({CALLS_PER_ROUND} calls/round)"
    url = canned_server.url("/v1/chat/completions")
    raw = _raw_chat(manager, url)
    call = _llmpool_chat(client) if name == "llmpool" else raw
    assert call() == canned_server.text
    server = psutil.Process(canned_server.pid)
    per_thread = CALLS_PER_ROUND // threads
    with ThreadPoolExecutor(max_workers=threads) as executor:
        run = in_threads(executor, threads, per_thread, call)
        baseline = in_threads(executor, threads, per_thread, raw)
        server_started = sum(server.cpu_times()[:2])
        _measure(benchmark, name, run, baseline, rounds=10, calls=CALLS_PER_ROUND)
        server_cpu = sum(server.cpu_times()[:2]) - server_started
    served = CALLS_PER_ROUND * (11 if name == "urllib3" else 22)
    benchmark.extra_info["server_cpu_us_per_call"] = round(server_cpu / served * 1e6, 1)
