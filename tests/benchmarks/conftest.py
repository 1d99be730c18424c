"""Benchmark helpers: a mock server, a TLS variant with a throwaway CA, a fast canned
server in its own process, thread runners."""

from __future__ import annotations

import importlib.util
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest

from llmpool.testing import MockLLMServer


@pytest.fixture(scope="session")
def http_server() -> Iterator[MockLLMServer]:
    """One plain-HTTP mock server for every benchmark of the session."""
    with MockLLMServer(max_recorded=16) as server:
        yield server


@pytest.fixture(scope="session")
def tls_files() -> Iterator[tuple[ssl.SSLContext, str]]:
    """A server SSLContext signed by a throwaway CA, and the CA's PEM file."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ca.pem"
        ca.cert_pem.write_to_path(str(path))
        yield context, str(path)


@pytest.fixture(scope="session")
def https_server(tls_files: tuple[ssl.SSLContext, str]) -> Iterator[MockLLMServer]:
    """The same mock server over TLS (its CA file is in ``tls_files``)."""
    with MockLLMServer(max_recorded=16, ssl_context=tls_files[0]) as server:
        yield server


CANNED_SERVER_SCRIPT = Path(__file__).parent / "scripts" / "canned_server.py"


def load_module(name: str, path: Path) -> ModuleType:
    """The Python file at *path* as a module named *name* (a script, or a
    helper of another test folder, which is not on this folder's path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_canned_server_module() -> ModuleType:
    """``scripts/canned_server.py`` as a module (its canned text and answers)."""
    return load_module("canned_server", CANNED_SERVER_SCRIPT)


@attrs.frozen
class CannedServer:
    """A running ``scripts/canned_server.py`` process."""

    base_url: str  # http://127.0.0.1:PORT/v1
    pid: int
    text: str  # the content of every answer, streamed or not

    def url(self, path: str) -> str:
        return self.base_url.rsplit("/v1", 1)[0] + path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def canned_server() -> Iterator[CannedServer]:
    """The canned server (epoll mode) in its own process on a free port, ready
    when it accepts a connection; terminated at the end of the session."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(CANNED_SERVER_SCRIPT), "--port", str(port), "--mode", "epoll"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10.0
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the canned server did not start") from None
                time.sleep(0.02)
        text = load_canned_server_module().TEXT
        yield CannedServer(base_url=f"http://127.0.0.1:{port}/v1", pid=process.pid, text=text)
    finally:
        process.kill()
        process.wait(10)
        if process.stdin is not None:
            process.stdin.close()


def in_threads(
    executor: ThreadPoolExecutor, threads: int, per_thread: int, call: Callable[[], Any]
) -> Callable[[], None]:
    """A function that runs *call* ``per_thread`` times in each of *threads* threads."""

    def work() -> None:
        for _ in range(per_thread):
            call()

    def run() -> None:
        for future in [executor.submit(work) for _ in range(threads)]:
            future.result()

    return run


class CannedResponse:
    """A response already read: no socket, no server."""

    status = 200
    connection_reused = True

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.headers = {"x-request-id": "req_1", "content-type": "application/json"}

    def read(self, max_bytes: int | None = None) -> bytes:
        return self.body

    def drain(self, limit: int = 1 << 20) -> bool:
        return True

    def close(self) -> None:
        return None


class CannedTransport:
    """A Transport that answers every request with the same canned response."""

    def __init__(self, body: bytes) -> None:
        self.answer = CannedResponse(body)

    def request(self, method: str, url: str, **_: Any) -> Any:
        return self.answer

    def get_stats(self) -> dict[str, Any]:
        return {}

    def close_idle(self) -> int:
        return 0

    def close(self) -> None:
        return None


def print_lines(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Write a module's summary *lines* to the terminal, past the capture."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if not lines or reporter is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


class Interleaved:
    """Runs and times one round of the other row's work before each measured round."""

    def __init__(self, other: Callable[[], object] | None) -> None:
        self.other = other
        self.times: list[float] = []

    def __call__(self) -> None:
        if self.other is None:
            return
        started = time.perf_counter()
        self.other()
        self.times.append(time.perf_counter() - started)


def measure_interleaved(
    results: dict[str, dict[str, dict[str, float]]],
    benchmark: Any,
    row: str,
    run: Callable[[], object],
    other: Callable[[], object] | None,
    rounds: int,
) -> None:
    """Benchmark *run*; with *other*, interleave one round of it before each
    round (both see the same machine load). Records the median seconds per
    round, and the other's (``interleaved_median``), in
    ``results[group][row]``."""
    interleaved = Interleaved(other)
    benchmark.pedantic(run, setup=interleaved, rounds=rounds, warmup_rounds=max(1, rounds // 10))
    if benchmark.stats is None:  # --benchmark-disable
        return
    entry = {"median": benchmark.stats.stats.median}
    if interleaved.times:
        entry["interleaved_median"] = statistics.median(interleaved.times)
    results.setdefault(benchmark.group, {})[row] = entry


def rounds_of(calls: int, call: Callable[[], object]) -> Callable[[], None]:
    """A round: *calls* calls of *call*."""

    def run() -> None:
        for _ in range(calls):
            call()

    return run


def added_per_call(
    row: dict[str, float], baseline: dict[str, float], calls: int
) -> tuple[float, float]:
    """Microseconds per call that *row* (an entry of :func:`measure_interleaved`,
    rounds of *calls* calls) adds over *baseline*'s row: ``(side by side,
    interleaved)``, the second against the rounds run just before its own."""
    per = calls * 1e-6  # seconds per round -> us per call
    return (
        (row["median"] - baseline["median"]) / per,
        (row["median"] - row["interleaved_median"]) / per,
    )
