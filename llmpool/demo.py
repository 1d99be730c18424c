"""The ``llmpool demo`` workload: many calls from many threads through one Client.

It runs against the embedded :class:`~llmpool.testing.MockLLMServer` (no API
key, no network) or a real server, first through a pooled client and then,
for comparison, with a new connection per call, and reports what pooling
bought. With ``endpoints`` it runs over a group of embedded servers, some
refusing connections (:mod:`llmpool.demo_endpoints`). Used by the command
line; importable for notebooks and scripts.
"""

from __future__ import annotations

import contextlib
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from llmpool.client import Client
from llmpool.config import MemoryConfig, PoolConfig
from llmpool.demo_endpoints import (
    check_group_options,
    endpoint_rows,
    group_client_kwargs,
    group_head,
    group_servers,
    render_endpoints,
)
from llmpool.endpoints.model import Endpoint
from llmpool.exceptions import LLMPoolError
from llmpool.models import CallContext
from llmpool.plugins.base import LLMPlugin
from llmpool.redaction import redact_url
from llmpool.stats_math import percentiles

__all__ = ["DemoOptions", "render", "run_demo"]

#: Faults the embedded server sprinkles in (a few percent of calls).
DEMO_FAULTS = "status=429,retry_after_ms=20;status=503;reset;disconnect=0"

Progress = Callable[[int], None]


@attrs.frozen(kw_only=True)
class DemoOptions:
    """What the demo runs. Immutable."""

    calls: int = 2000
    threads: int = 16
    latency_ms: float = 20.0
    fault_rate: float = 0.02
    stream_ratio: float = 0.25
    tls: bool = False
    baseline: bool = True
    seed: int = 1
    model: str = "mock-model"
    base_url: str | None = None
    api_key: str | None = None
    provider: str = "openai"
    plugins: tuple[str, ...] = ("usage",)
    #: Keep every call's start and latency and a timeline of the pool and the
    #: memory manager in the report (``detail``), for ``--html``.
    detail: bool = False
    #: Run over a group of this many embedded endpoints (0: one server, as ever).
    endpoints: int = 0
    #: How many of them refuse connections (the first ones).
    fail: int = 0


def run_demo(options: DemoOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Run the workload (and the unpooled baseline) and return the report as plain data."""
    check_group_options(options.endpoints, options.fail, options.base_url)
    with _target(options) as (base_url, ca_file, server_info):
        report: dict[str, Any] = {
            "options": _shown_options(options),
            "server": _shown_server(server_info),
        }
        report["pooled"] = _run(options, base_url, ca_file, pooled=True, progress=progress)
        if options.baseline:
            report["unpooled"] = _run(options, base_url, ca_file, pooled=False, progress=progress)
            report["gain"] = _gain(report["pooled"], report["unpooled"])
    return report


def _shown_options(options: DemoOptions) -> dict[str, Any]:
    """The options as the report shows them: no API key, no password in the URL."""
    hidden = (
        ("api_key", "detail") if options.endpoints else ("api_key", "detail", "endpoints", "fail")
    )
    shown = attrs.asdict(options, filter=lambda a, _: a.name not in hidden)
    if shown["base_url"]:
        shown["base_url"] = redact_url(shown["base_url"])
    return shown


def _shown_server(info: dict[str, Any]) -> dict[str, Any]:
    """The server description as the report shows it (no password in the URL)."""
    return {**info, "base_url": redact_url(info["base_url"])}


#: Where the demo sends its calls: a base URL, or the endpoints of a group.
Target = str | tuple[Endpoint, ...]


@contextlib.contextmanager
def _target(options: DemoOptions) -> Iterator[tuple[Target, str | None, dict[str, Any]]]:
    """The server to call: the embedded mock server (optionally over TLS), a
    group of them (``endpoints``), or the given URL."""
    if options.base_url:
        yield options.base_url, None, {"kind": "external", "base_url": options.base_url}
        return
    from llmpool.testing import MockLLMServer

    with contextlib.ExitStack() as stack:
        context, ca_file = (None, None)
        if options.tls:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="llmpool-demo-"))
            context, ca_file = _throwaway_ca(Path(tmp))
        if options.endpoints:
            endpoints, info = stack.enter_context(group_servers(options, context, DEMO_FAULTS))
            yield endpoints, ca_file, info
            return
        server = MockLLMServer(
            latency=options.latency_ms / 1000.0,
            fault_rate=options.fault_rate,
            random_faults=DEMO_FAULTS,
            seed=options.seed,
            max_recorded=100,
            ssl_context=context,
        )
        stack.enter_context(server)
        yield (
            server.base_url,
            ca_file,
            {
                "kind": "embedded mock server",
                "base_url": server.base_url,
                "latency_ms": options.latency_ms,
                "fault_rate": options.fault_rate,
                "tls": options.tls,
            },
        )


def _throwaway_ca(directory: Path) -> tuple[ssl.SSLContext, str]:
    try:
        import trustme
    except ImportError:  # pragma: no cover - depends on the environment
        raise LLMPoolError(
            "--tls needs the throwaway CA maker from the 'cli' extra: pip install 'llmpool[cli]'"
        ) from None
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return context, str(ca_file)


def _run(
    options: DemoOptions,
    target: Target,
    ca_file: str | None,
    *,
    pooled: bool,
    progress: Progress | None,
) -> dict[str, Any]:
    """One pass of the workload; return its figures."""
    pool = PoolConfig(
        max_connections=options.threads,
        max_keepalive=options.threads if pooled else 0,
        ca_certs=ca_file,
        pool_timeout=60.0,
    )
    tally = _RetryTally()
    memory_config = MemoryConfig(sample_interval=0.25)
    where: dict[str, Any] = (
        {"base_url": target, "api_key": options.api_key or "demo-key", "provider": options.provider}
        if isinstance(target, str)
        else group_client_kwargs(target, options.fail)
    )
    client = Client(
        **where,
        pool=pool,
        plugins=[*options.plugins, tally],
        memory=memory_config,
        deadline=30.0,
    )
    with client:
        timeline = _Timeline(client, enabled=options.detail)
        with timeline:
            calls, errors, elapsed = _drive(client, options, progress)
        stats = client.stats()
        memory = client.memory.report().to_dict() if client.memory is not None else {}
    latencies = [took for _, took, error in calls if error is None]
    pool_stats = stats["pool"]
    plugins = stats["plugins"].get("plugins", {})
    plugins.pop(tally.name, None)
    result = {
        "mode": "pooled" if pooled else "new connection per call",
        "calls": options.calls,
        "ok": len(latencies),
        "errors": errors,
        "retries": stats["client"]["retries"],
        "reuse_rate": pool_stats["reuse_rate"],
        "connections_opened": pool_stats["connections_created"],
        "stale_retries": pool_stats["stale_retries"],
        "latency_ms": _percentiles(latencies),
        "elapsed_s": elapsed,
        "throughput": options.calls / elapsed if elapsed else 0.0,
        "retries_by_kind": tally.counts(),
        "memory": _memory_summary(memory),
        "plugins": plugins,
    }
    if "endpoints" in stats and not isinstance(target, str):
        result["endpoints"] = endpoint_rows(stats["endpoints"], target, options.fail)
    if options.detail:
        result["detail"] = {
            "calls": calls,
            "timeline": timeline.samples,
            "thresholds": {
                name: getattr(memory_config, name) for name in ("warn", "gc", "shed", "critical")
            },
        }
    return result


class _RetryTally(LLMPlugin):
    """Counts the demo's retries by their cause (``HTTP 429``, ``ProtocolError``).
    Thread-safe (one lock)."""

    name = "demo_retries"

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _counts
        self._counts: dict[str, int] = {}

    def on_retry(self, ctx: CallContext, attempt: int, error: Exception, delay: float) -> None:
        status = getattr(error, "status_code", None)
        kind = f"HTTP {status}" if isinstance(status, int) else type(error).__name__
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))


class _Timeline:
    """While the workload runs, samples the pool and the memory manager every
    *interval* seconds on a daemon thread: ``[seconds, connections opened,
    connections in use, rss MiB, memory state]`` rows (nothing when disabled)."""

    def __init__(self, client: Client, *, enabled: bool, interval: float = 0.05) -> None:
        self.samples: list[list[Any]] = []
        self._client = client
        self._enabled = enabled
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="llmpool-demo-timeline", daemon=True
        )
        self._started = 0.0

    def __enter__(self) -> _Timeline:
        self._started = time.perf_counter()
        if self._enabled:
            self._sample()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._enabled:
            self._stop.set()
            self._thread.join()
            self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        stats = self._client.stats()
        pool, memory = stats["pool"], stats["memory"]
        self.samples.append(
            [
                round(time.perf_counter() - self._started, 3),
                pool.get("connections_created", 0),
                pool.get("in_use", 0),
                memory.get("rss_mb"),
                memory.get("state"),
            ]
        )


def _drive(
    client: Client, options: DemoOptions, progress: Progress | None
) -> tuple[list[tuple[float, float, str | None]], dict[str, int], float]:
    """Run the calls from the threads; return each call's (start s, latency ms,
    error type or None), errors by type, and the seconds it all took."""
    calls: list[tuple[float, float, str | None]] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()  # guards calls and errors
    messages = [{"role": "user", "content": "Say hello."}]
    every = max(1, round(1 / options.stream_ratio)) if options.stream_ratio > 0 else 0

    def one(index: int) -> None:
        started = time.perf_counter()
        offset = round(started - begun, 4)
        error = None
        try:
            if every and index % every == 0:
                with client.chat(options.model, messages, stream=True) as stream:
                    for _ in stream:
                        pass
            else:
                client.chat(options.model, messages)
        except LLMPoolError as exc:
            error = type(exc).__name__
        took = round((time.perf_counter() - started) * 1000.0, 3)
        with lock:
            calls.append((offset, took, error))
            if error is not None:
                errors[error] = errors.get(error, 0) + 1
        if progress is not None:
            progress(1)

    begun = time.perf_counter()
    with ThreadPoolExecutor(options.threads, thread_name_prefix="llmpool-demo") as pool:
        for future in [pool.submit(one, i) for i in range(options.calls)]:
            future.result()
    return calls, errors, time.perf_counter() - begun


def _percentiles(values: list[float]) -> dict[str, float]:
    p50, p95, p99 = percentiles(values, (0.50, 0.95, 0.99))
    return {"p50": p50, "p95": p95, "p99": p99}


def _memory_summary(report: dict[str, Any]) -> dict[str, Any]:
    mib = 1 << 20
    gc = report.get("gc", {}) or {}
    return {
        "rss_mib": round((report.get("rss") or 0) / mib, 1),
        "peak_mib": round((report.get("peak_rss") or 0) / mib, 1),
        "limit_mib": round((report.get("limit") or 0) / mib, 1),
        "state": report.get("state"),
        "gc_runs": gc.get("runs", 0),
    }


def _gain(pooled: dict[str, Any], unpooled: dict[str, Any]) -> dict[str, Any]:
    def ratio(a: float, b: float) -> float:
        return round(a / b, 2) if b else 0.0

    return {
        "throughput_x": ratio(pooled["throughput"], unpooled["throughput"]),
        "connections_saved": unpooled["connections_opened"] - pooled["connections_opened"],
        "p50_latency_change": ratio(pooled["latency_ms"]["p50"], unpooled["latency_ms"]["p50"]),
    }


# --------------------------------------------------------------------------- text


def render(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    opts = report["options"]
    server = report["server"]
    runs = [report["pooled"]] + ([report["unpooled"]] if "unpooled" in report else [])
    head = (
        f"llmpool demo: {opts['calls']} calls from {opts['threads']} threads "
        f"({round(opts['stream_ratio'] * 100)}% streamed) against the {server['kind']} "
        f"at {server['base_url']}"
    )
    if server["kind"] != "external":
        head += f", {server['latency_ms']:g} ms latency, {server['fault_rate']:.0%} faults"
    if "endpoints" in server:
        head = group_head(report)
    lines = [head, ""]
    width = 26
    lines.append("".ljust(width) + "".join(r["mode"].ljust(28) for r in runs))
    for label, cell in _ROWS:
        lines.append(label.ljust(width) + "".join(cell(r).ljust(28) for r in runs))
    if "endpoints" in report["pooled"]:
        lines += ["", *render_endpoints(report["pooled"])]
    plugins = report["pooled"]["plugins"]
    if plugins:
        lines.append("")
        lines.append("plugins: " + "; ".join(_plugin_line(n, p) for n, p in plugins.items()))
    if "gain" in report:
        gain = report["gain"]
        lines += [
            "",
            f"What pooling bought: {gain['throughput_x']:.2f}x the throughput, "
            f"{gain['connections_saved']} fewer connections opened, "
            f"p50 latency x{gain['p50_latency_change']:.2f}.",
        ]
        if server["kind"] != "external" and not server["tls"]:
            lines.append(
                "(On loopback a new TCP connection is cheap; add --tls to see the cost of "
                "a TLS handshake per call, as against a real API.)"
            )
    return "\n".join(lines)


def _errors(run: dict[str, Any]) -> str:
    if not run["errors"]:
        return "none"
    return ", ".join(f"{name} {count}" for name, count in sorted(run["errors"].items()))


def _latency(run: dict[str, Any]) -> str:
    lat = run["latency_ms"]
    return f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} ms"


def _memory(run: dict[str, Any]) -> str:
    mem = run["memory"]
    return f"{mem['rss_mib']} / {mem['peak_mib']} MiB, gc {mem['gc_runs']}"


_ROWS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("calls ok", lambda r: f"{r['ok']} of {r['calls']}"),
    ("errors", _errors),
    ("retries", lambda r: str(r["retries"])),
    ("connection reuse rate", lambda r: f"{r['reuse_rate']:.1%}"),
    ("connections opened", lambda r: str(r["connections_opened"])),
    ("latency p50 / p95 / p99", _latency),
    ("throughput", lambda r: f"{r['throughput']:.0f} calls/s"),
    ("memory rss / peak", _memory),
]


def _plugin_line(name: str, stats: dict[str, Any]) -> str:
    own = stats.get("own") or {}
    if name == "usage" and own:
        return f"usage {own.get('calls', 0)} calls, {own.get('total_tokens', 0)} tokens"
    return f"{name} {stats.get('calls', 0)} hook calls, {stats.get('failures', 0)} failures"
