"""Throughput of MockLLMServer on loopback with raw urllib3 keep-alive clients.

Sequential (one connection) and 8 threads (8 connections), for GET /v1/models,
a JSON chat completion and a streamed one; and the server alone, in its own
process (``llmpool mock-server``), driven by a minimal raw-socket client. Each
benchmark stores its requests per second in ``extra_info``. Run::

    tox -e bench -- tests/benchmarks/test_mock_server_bench.py
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import urllib3

from llmpool.testing import MockLLMServer

THREADS = 8
PER_THREAD = 50
CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
STREAM = json.dumps(
    {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
).encode()

REQUESTS: dict[str, Callable[[urllib3.HTTPConnectionPool], Any]] = {
    "models": lambda http: http.request("GET", "/v1/models").data,
    "chat": lambda http: http.request("POST", "/v1/chat/completions", body=CHAT).data,
    "chat-stream": lambda http: http.request("POST", "/v1/chat/completions", body=STREAM).data,
}


@pytest.fixture(scope="module")
def server() -> Iterator[MockLLMServer]:
    """One mock server for the module, keeping few records."""
    with MockLLMServer(max_recorded=16) as mock:
        yield mock


@pytest.fixture
def http(server: MockLLMServer) -> Iterator[urllib3.HTTPConnectionPool]:
    """A keep-alive urllib3 pool with one connection per thread."""
    pool = urllib3.HTTPConnectionPool(
        "127.0.0.1", server.port, maxsize=THREADS, block=True, retries=False
    )
    yield pool
    pool.close()


@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_sequential_keep_alive(
    benchmark: Any, server: MockLLMServer, http: urllib3.HTTPConnectionPool, kind: str
) -> None:
    """Requests per second, one thread, one reused connection."""
    call = REQUESTS[kind]
    server.clear()
    benchmark(call, http)
    benchmark.extra_info["requests_per_second"] = round(1 / benchmark.stats["mean"])
    assert server.connections_opened == 1


@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_eight_threads_keep_alive(
    benchmark: Any, server: MockLLMServer, http: urllib3.HTTPConnectionPool, kind: str
) -> None:
    """Requests per second, 8 threads sharing a pool of 8 keep-alive connections."""
    call = REQUESTS[kind]

    def work() -> None:
        for _ in range(PER_THREAD):
            call(http)

    with ThreadPoolExecutor(THREADS) as executor:

        def run() -> None:
            for future in [executor.submit(work) for _ in range(THREADS)]:
                future.result()

        server.clear()
        benchmark(run)
    benchmark.extra_info["requests_per_second"] = round(
        THREADS * PER_THREAD / benchmark.stats["mean"]
    )
    assert server.connections_opened <= THREADS


RAW = {
    "models": b"GET /v1/models HTTP/1.1\r\nHost: mock\r\n\r\n",
    "chat": b"POST /v1/chat/completions HTTP/1.1\r\nHost: mock\r\nContent-Length: %d\r\n\r\n%s"
    % (len(CHAT), CHAT),
}


@pytest.fixture(scope="module")
def server_process() -> Iterator[int]:
    """`llmpool mock-server` in its own process; yields its port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "llmpool.cli", "mock-server"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    base_url = process.stdout.readline().strip()
    yield int(base_url.rsplit(":", 1)[1].split("/")[0])
    process.terminate()
    process.wait(timeout=20)


def _exchange(sock: socket.socket, request: bytes) -> None:
    """Send *request* and read its Content-Length response."""
    sock.sendall(request)
    data = b""
    while True:
        data += sock.recv(65536)
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(body) >= length:
                return


@pytest.mark.parametrize("kind", sorted(RAW))
def test_server_alone_raw_socket(benchmark: Any, server_process: int, kind: str) -> None:
    """Requests per second of the server in its own process, one keep-alive connection."""
    with socket.create_connection(("127.0.0.1", server_process)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        benchmark(_exchange, sock, RAW[kind])
    benchmark.extra_info["requests_per_second"] = round(1 / benchmark.stats["mean"])
