"""A threaded web app under gunicorn, calling a 20 ms upstream: llmpool beside the openai SDK
and ``requests.post`` per call.

The same Flask app (``scripts/webapp_backends.py``) runs under gunicorn with the
example app's configuration (``examples/webapp/gunicorn.conf.py``: 2 gthread
workers x 8 threads, ``--preload``), once per backend, in front of ``llmpool
mock-server --echo --latency-ms 20`` in its own process. 32 threads, each on
its own keep-alive connection, send 1,000 chat calls per round; every answer
must be its own echo. Figures (``extra_info``): requests per second (1,000 /
the median round's time; ``_best``: the fastest round's), the upstream
connections the mock server accepted per 1,000 requests it served (warm-up
included), and the CPU time the two workers spent per request (less
sensitive than the rate to other jobs on the machine). docs/benchmarks.rst
records them. Run::

    tox -e bench -- tests/benchmarks/test_webapp_bench.py
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

_MISSING = [name for name in ("flask", "gunicorn", "openai") if not importlib.util.find_spec(name)]
if _MISSING:
    pytest.skip(
        f"needs {', '.join(_MISSING)}: tox -e bench installs them (the webapp extra and openai)",
        allow_module_level=True,
    )

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
GUNICORN_CONF = ROOT / "examples" / "webapp" / "gunicorn.conf.py"
WORKERS = 2
THREADS = 8
CONNECTIONS = 32
PER_ROUND = 1_000
WARMUP = 320
ROUNDS = 5
SERVED = re.compile(r"served (\d+) requests on (\d+) connections")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def mock_upstream(stats: dict[str, int]) -> Iterator[str]:
    """``llmpool mock-server`` in its own process; on exit, *stats* gets what it served."""
    process = subprocess.Popen(
        [sys.executable, "-m", "llmpool.cli", "mock-server", "--echo", "--latency-ms", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        found = SERVED.search(err)
        assert found, err
        stats["requests"], stats["connections"] = int(found.group(1)), int(found.group(2))


def workers_cpu(master: int) -> float:
    """CPU seconds (user + system) the master's children, the workers, have used."""
    total = 0.0
    for child in psutil.Process(master).children():
        times = child.cpu_times()
        total += times.user + times.system
    return total


@contextlib.contextmanager
def gunicorn(backend: str, upstream: str) -> Iterator[tuple[int, int]]:
    """The benchmark app under gunicorn (its own process group); yields its port and pid."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "WEBAPP_BACKEND": backend,
            "UPSTREAM_URL": upstream,
            "WEBAPP_WORKERS": str(WORKERS),
            "WEBAPP_THREADS": str(THREADS),
            "PROMETHEUS_MULTIPROC_DIR": tmp,
        }
        env.pop("LLMPOOL_MAX_CONNECTIONS", None)
        command = [
            *(sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONF)),
            *("--chdir", str(SCRIPTS), "--bind", f"127.0.0.1:{port}", "webapp_backends:app"),
        ]
        log = Path(tmp) / "gunicorn.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            for _ in range(600):
                assert process.poll() is None, log.read_text()
                with contextlib.suppress(OSError):
                    if post(port, "ready")[0] == 200:
                        break
                time.sleep(0.05)
            yield port, process.pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def post(port: int, message: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            "/chat",
            body=json.dumps({"message": message}),
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def drive(port: int, total: int) -> int:
    """*total* chat calls from CONNECTIONS keep-alive connections; the number of wrong answers."""
    lock = threading.Lock()
    state = {"left": total, "wrong": 0}

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while True:
                with lock:
                    if state["left"] == 0:
                        return
                    state["left"] -= 1
                message = f"bench tok-{uuid.uuid4().hex}"
                conn.request(
                    "POST",
                    "/chat",
                    body=json.dumps({"message": message}),
                    headers={"Content-Type": "application/json"},
                )
                response = conn.getresponse()
                body = response.read()
                if response.status != 200 or json.loads(body)["reply"] != message:
                    with lock:
                        state["wrong"] += 1
        finally:
            conn.close()

    with ThreadPoolExecutor(CONNECTIONS) as executor:
        for future in [executor.submit(worker) for _ in range(CONNECTIONS)]:
            future.result()
    return state["wrong"]


@pytest.mark.parametrize("backend", ["llmpool", "openai", "requests"])
def test_webapp_throughput(benchmark: Any, backend: str) -> None:
    """Requests per second and upstream connections per 1,000 requests of the same gunicorn
    app on each backend; every answer is the call's own echo."""
    served: dict[str, int] = {}
    with mock_upstream(served) as upstream, gunicorn(backend, upstream) as (port, master):
        assert drive(port, WARMUP) == 0
        cpu_before = workers_cpu(master)
        wrong = benchmark.pedantic(drive, args=(port, PER_ROUND), rounds=ROUNDS, iterations=1)
        cpu = workers_cpu(master) - cpu_before
        assert wrong == 0
    benchmark.group = "webapp: gunicorn 2 workers x 8 threads, 20 ms upstream"
    stats = benchmark.stats.stats
    benchmark.extra_info["requests_per_second"] = round(PER_ROUND / stats.median)
    benchmark.extra_info["requests_per_second_best"] = round(PER_ROUND / stats.min)
    benchmark.extra_info["workers_cpu_ms_per_request"] = round(1000 * cpu / (ROUNDS * PER_ROUND), 2)
    benchmark.extra_info["upstream_requests"] = served["requests"]
    benchmark.extra_info["upstream_connections"] = served["connections"]
    benchmark.extra_info["connections_per_1000_requests"] = round(
        1000 * served["connections"] / served["requests"], 1
    )
    print(f"\n{backend}: {benchmark.extra_info}")
