"""Memory workloads behind tests/benchmarks/test_memory_outcomes.py.

Each workload runs in a fresh interpreter started by a benchmark and prints one
JSON object (bytes, seconds, counts) on its last line::

    python memory_workloads.py serve [--reply-bytes N] [--fault-rate R --faults SPECS]
    python memory_workloads.py leak URL [--calls N] [--warmup N] [--threads N] [--no-trace]
                                        [--tolerate-errors]
    python memory_workloads.py compare CLIENT URL [--calls N] [--threads N]
    python memory_workloads.py large CLIENT URL [--threads N] [--rounds N]
    python memory_workloads.py stream CLIENT URL

CLIENT is ``llmpool``, ``requests`` (one shared ``requests.Session`` + json) or
``openai`` (the official SDK, sync). The client library is imported only by
the workload that uses it. RSS is read from ``/proc/self/statm``; a peak is the
kernel's high-water mark (``VmHWM``), reset through ``/proc/self/clear_refs``
just before the measured phase, so it is the peak of that phase alone. Linux
only.

:data:`IMPORT_PROBE` is run as ``python -c IMPORT_PROBE MODULE`` (nothing but
builtins imported before the measured import); :func:`import_costs` reads
``python -X importtime``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
MODEL = "mock-model"
HI = [{"role": "user", "content": "hi"}]
CLIENTS = ("llmpool", "requests", "openai")

#: ``python -c IMPORT_PROBE MODULE [CLIENT_URL]``: prints the import's seconds and
#: RSS increase, then, with a URL, the same for building a client too.
IMPORT_PROBE = """
import sys, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
name = sys.argv[1]
r0 = rss(); t0 = time.perf_counter()
module = __import__(name)
t1 = time.perf_counter(); r1 = rss()
if name == "llmpool":
    module.Client("http://127.0.0.1:9/v1", api_key="x")
elif name == "openai":
    module.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x")
elif name == "requests":
    module.Session()
t2 = time.perf_counter(); r2 = rss()
print(t1 - t0, r1 - r0, t2 - t0, r2 - r0)
"""


# --------------------------------------------------------------------------- measuring


def rss() -> int:
    """The resident set size now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); False if it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    """The RSS high-water mark since the last reset, in bytes.

    ``VmHWM`` of ``/proc/self/status``, not ``ru_maxrss``: Linux keeps the
    largest RSS of the process before ``execve`` in ``ru_maxrss`` (here the
    parent's at ``fork``), and ``clear_refs`` does not reset that part.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def settle() -> int:
    """Collect garbage, then return the RSS."""
    gc.collect()
    return rss()


def import_costs(importtime_stderr: str, package: str, top: int = 10) -> dict[str, Any]:
    """Where ``import PACKAGE`` spends its time, from ``python -X importtime``'s stderr.

    ``imported``: the modules that the package's own modules import directly
    (not those other libraries import), by cumulative microseconds, largest
    first: what a lazier package would avoid. ``own``: the package's modules
    by their own (self) microseconds: the cost of executing its code, class
    creation included.
    """
    Node = tuple[str, int, int, list[Any]]
    pending: dict[int, list[Node]] = {}
    for line in importtime_stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        head, cumulative, name = line.split("|", 2)
        depth = (len(name) - len(name.lstrip())) // 2
        node = (name.strip(), int(head.split()[-1]), int(cumulative), pending.pop(depth + 1, []))
        pending.setdefault(depth, []).append(node)
    imported: dict[str, int] = {}
    own: dict[str, int] = {}

    def walk(nodes: list[Node], inside: bool) -> None:
        for name, self_us, cumulative, children in nodes:
            mine = name == package or name.startswith(package + ".")
            if mine:
                own[name] = self_us
            elif inside:
                imported[name] = max(imported.get(name, 0), cumulative)
            walk(children, mine)

    for roots in pending.values():
        walk(roots, False)

    def ranked(table: dict[str, int]) -> list[list[Any]]:
        return [[name, us] for name, us in sorted(table.items(), key=lambda kv: -kv[1])[:top]]

    return {
        "imported": ranked(imported),
        "own": ranked(own),
        "own_total_us": sum(own.values()),
    }


# --------------------------------------------------------------------------- clients


class Caller:
    """One shared client of a kind; ``chat()`` and ``stream()`` return the text length."""

    def __init__(self, kind: str, url: str, threads: int) -> None:
        self.kind = kind
        self.url = url
        if kind == "llmpool":
            import llmpool

            self.client: Any = llmpool.Client(
                url,
                api_key="sk-bench",
                pool=llmpool.PoolConfig(max_connections=threads, max_keepalive=threads),
            )
        elif kind == "requests":
            import requests

            self.client = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=threads)
            self.client.mount("http://", adapter)
        elif kind == "openai":
            import openai

            self.client = openai.OpenAI(base_url=url, api_key="sk-bench", max_retries=0)
        else:
            raise SystemExit(f"unknown client {kind!r}; choose from {CLIENTS}")

    def ask(self) -> Any:
        """One chat call; returns what the library returns (requests: the response
        and its decoded JSON, which a caller keeps together)."""
        if self.kind == "llmpool":
            return self.client.chat(MODEL, HI)
        if self.kind == "requests":
            response = self.client.post(
                self.url + "/chat/completions",
                json={"model": MODEL, "messages": HI},
                headers={"Authorization": "Bearer sk-bench"},
            )
            response.raise_for_status()
            return response, response.json()
        return self.client.chat.completions.create(model=MODEL, messages=HI)

    def text(self, answer: Any) -> str:
        """The reply text of an :meth:`ask` result."""
        if self.kind == "llmpool":
            return str(answer.text)
        if self.kind == "requests":
            return str(answer[1]["choices"][0]["message"]["content"])
        return str(answer.choices[0].message.content)

    def chat(self) -> int:
        """One chat call; the length of its text."""
        return len(self.text(self.ask()))

    def stream(self) -> int:
        size = 0
        if self.kind == "llmpool":
            with self.client.chat(MODEL, HI, stream=True) as stream:
                for chunk in stream:
                    size += len(chunk.delta)
            return size
        if self.kind == "openai":
            with self.client.chat.completions.create(model=MODEL, messages=HI, stream=True) as s:
                for chunk in s:
                    if chunk.choices:
                        size += len(chunk.choices[0].delta.content or "")
            return size
        raise SystemExit("stream: llmpool or openai")

    def close(self) -> None:
        self.client.close()


def in_threads(threads: int, calls: int, call: Callable[[int], Any]) -> None:
    """*calls* calls of ``call(index)`` spread over *threads* threads; failures surface."""

    def work(first: int) -> None:
        for index in range(first, calls, threads):
            call(index)

    with ThreadPoolExecutor(threads) as executor:
        for future in [executor.submit(work, first) for first in range(threads)]:
            future.result()


# --------------------------------------------------------------------------- workloads


def run_leak(args: argparse.Namespace) -> dict[str, Any]:
    """llmpool's Client (memory manager and the usage plugin on), JSON and streamed
    calls alternating: RSS growth over ``calls`` calls after a warm-up, then the
    tracemalloc growth attributable to llmpool over as many calls again.

    With ``--tolerate-errors`` (a server injecting faults) a call that fails
    after one quick retry is counted, not raised.
    """
    import llmpool
    from llmpool.exceptions import LLMPoolError

    client = llmpool.Client(
        args.url,
        api_key="sk-bench",
        pool=llmpool.PoolConfig(max_connections=args.threads, max_keepalive=args.threads),
        memory=llmpool.MemoryConfig(sample_interval=0.1, history=50, max_memory_mb=8192),
        plugins=["usage"],
        timeout=10.0,
        retry=llmpool.RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.002),
    )
    tolerated = LLMPoolError if args.tolerate_errors else ()

    def call(index: int) -> None:
        try:
            if index % 2:
                with client.chat(MODEL, HI, stream=True) as stream:
                    for _chunk in stream:
                        pass
            else:
                client.chat(MODEL, HI)
        except tolerated:
            pass

    in_threads(args.threads, args.warmup, call)
    before = settle()
    reset = reset_peak()
    started = time.perf_counter()
    in_threads(args.threads, args.calls, call)
    out: dict[str, Any] = {
        "calls": args.calls,
        "rss_before": before,
        "rss_after": settle(),
        "peak_rss": peak_rss(),
        "seconds": time.perf_counter() - started,
        "peak_reset": reset,
    }
    out["rss_growth"] = out["rss_after"] - before
    if args.trace:
        out.update(traced_growth(lambda: in_threads(args.threads, args.calls, call), client.memory))
    stats = client.stats()
    out["client_calls"] = stats["client"]["calls"]
    out["client_errors"] = stats["client"]["errors"]
    out["errors_by_type"] = stats["client"]["errors_by_type"]
    out["pool_in_use"] = stats["pool"]["in_use"]
    client.close()
    return out


def traced_growth(work: Callable[[], None], memory: Any) -> dict[str, Any]:
    """Bytes that llmpool's code allocated during *work* and still holds after gc.

    The memory manager's sampler thread is stopped while each snapshot is taken,
    so a sample half-way through (a 16 KiB read buffer) is not counted.
    """
    import tracemalloc

    import llmpool

    package = os.path.dirname(llmpool.__file__)
    filters = (
        tracemalloc.Filter(True, os.path.join(package, "*")),
        tracemalloc.Filter(True, "<attrs generated * llmpool.*>"),
        tracemalloc.Filter(False, os.path.join(package, "testing", "*")),
    )
    tracemalloc.start(1)
    memory.stop()
    gc.collect()
    first = tracemalloc.take_snapshot()
    memory.start()
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    memory.stop()
    gc.collect()
    last = tracemalloc.take_snapshot()
    tracemalloc.stop()
    everything = last.compare_to(first, "filename")
    mine = last.filter_traces(filters).compare_to(first.filter_traces(filters), "lineno")
    return {
        "traced_seconds": seconds,
        "tracemalloc_llmpool_growth": sum(stat.size_diff for stat in mine),
        "tracemalloc_total_growth": sum(stat.size_diff for stat in everything),
        "tracemalloc_top": [str(stat) for stat in mine[:5]],
    }


def run_compare(args: argparse.Namespace) -> dict[str, Any]:
    """RSS at start, after import and construction, steady after the calls, and the peak."""
    start = rss()
    caller = Caller(args.client, args.url, args.threads)
    ready = settle()
    reset = reset_peak()
    started = time.perf_counter()
    in_threads(args.threads, args.calls, lambda _: caller.chat())
    seconds = time.perf_counter() - started
    steady = settle()
    peak = max(peak_rss(), steady)
    caller.close()
    return {
        "client": args.client,
        "calls": args.calls,
        "threads": args.threads,
        "rss_start": start,
        "rss_ready": ready,
        "rss_steady": steady,
        "rss_peak": peak,
        "seconds": seconds,
        "peak_reset": reset,
    }


def run_large(args: argparse.Namespace) -> dict[str, Any]:
    """*threads* threads each receive a large JSON answer and hold it until all
    have theirs, *rounds* times: the peak RSS growth, and that divided by the
    threads (the memory one such call costs)."""
    caller = Caller(args.client, args.url, args.threads)
    size = caller.chat()  # warm-up: the allocator has seen one large body
    start, hold = threading.Barrier(args.threads), threading.Barrier(args.threads)

    def call(_: int) -> None:
        start.wait()
        answer = caller.ask()
        hold.wait()
        assert len(caller.text(answer)) == size

    before = settle()
    reset = reset_peak()
    in_threads(args.threads, args.threads * args.rounds, call)
    peak = peak_rss()
    caller.close()
    return {
        "client": args.client,
        "threads": args.threads,
        "reply_chars": size,
        "rss_before": before,
        "rss_peak": peak,
        "peak_growth": peak - before,
        "per_call": (peak - before) / args.threads,
        "peak_reset": reset,
    }


def run_stream(args: argparse.Namespace) -> dict[str, Any]:
    """Consume one very long streamed answer chunk by chunk; the peak RSS growth."""
    caller = Caller(args.client, args.url, 1)
    before = settle()
    reset = reset_peak()
    started = time.perf_counter()
    chars = caller.stream()
    seconds = time.perf_counter() - started
    peak = peak_rss()
    caller.close()
    return {
        "client": args.client,
        "text_chars": chars,
        "rss_before": before,
        "peak_growth": peak - before,
        "seconds": seconds,
        "peak_reset": reset,
    }


def run_serve(args: argparse.Namespace) -> dict[str, Any]:
    """Run a MockLLMServer until standard input closes; prints the base URL first."""
    from llmpool.testing import DEFAULT_REPLY, MockLLMServer

    reply = "x" * args.reply_bytes if args.reply_bytes else DEFAULT_REPLY
    faults: dict[str, Any] = {"fault_rate": args.fault_rate, "seed": 1}
    if args.faults:
        faults["random_faults"] = args.faults
    with MockLLMServer(reply=reply, max_recorded=1, **faults) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()
    return {"served": True}


# --------------------------------------------------------------------------- CLI


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="memory workloads (see the module docstring)")
    sub = parser.add_subparsers(dest="workload", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--reply-bytes", type=int, default=0)
    serve.add_argument("--fault-rate", type=float, default=0.0)
    serve.add_argument("--faults", default="", help="fault specs, ';' between them")
    serve.set_defaults(run=run_serve)
    leak = sub.add_parser("leak")
    leak.add_argument("url")
    leak.add_argument("--calls", type=int, default=20_000)
    leak.add_argument("--warmup", type=int, default=2_000)
    leak.add_argument("--threads", type=int, default=8)
    leak.add_argument("--no-trace", dest="trace", action="store_false")
    leak.add_argument("--tolerate-errors", action="store_true")
    leak.set_defaults(run=run_leak)
    for name, run in (("compare", run_compare), ("large", run_large), ("stream", run_stream)):
        p = sub.add_parser(name)
        p.add_argument("client", choices=CLIENTS)
        p.add_argument("url")
        p.add_argument("--calls", type=int, default=2_000)
        p.add_argument("--threads", type=int, default=32 if name == "large" else 8)
        p.add_argument("--rounds", type=int, default=2)
        p.set_defaults(run=run)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    print(json.dumps(args.run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
