"""Throughput of MockLLMServer on loopback with raw urllib3 keep-alive clients.

Sequential (one connection) and 8 threads (8 connections), for GET /v1/models,
a JSON chat completion and a streamed one. Each benchmark stores its
requests per second in ``extra_info``. Run::

    tox -e bench -- tests/benchmarks/test_mock_server_bench.py
"""

from __future__ import annotations

import json
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
