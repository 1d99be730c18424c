"""Per-request cost of ConnectionPool beside raw urllib3, requests.Session and requests.get.

Side by side in one run, grouped by scenario (HTTP/HTTPS, sequential, 8 and 32
threads). Each benchmark also records the connections the server saw per
1,000 requests. Run::

    tox -e bench -- tests/benchmarks/test_pool_bench.py
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import urllib3
from conftest import in_threads

import llmpool
from llmpool.pool.adapter import PooledHTTPAdapter
from llmpool.testing import MockLLMServer

CLIENTS = ("llmpool", "urllib3", "requests.Session", "llmpool+requests", "requests.get")


class Fixture:
    """The clients under test, pointed at one server."""

    def __init__(self, server: MockLLMServer, ca_file: str | None) -> None:
        self.server = server
        self.url = server.url("/v1/models")
        self.pool = llmpool.ConnectionPool(llmpool.PoolConfig(max_connections=32, ca_certs=ca_file))
        context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.manager = urllib3.PoolManager(maxsize=32, block=True, ssl_context=context)
        self.session = requests.Session()
        self.session.verify = ca_file or True
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=32, pool_block=True)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.pooled_session = requests.Session()
        pooled = PooledHTTPAdapter(self.pool)
        self.pooled_session.mount("http://", pooled)
        self.pooled_session.mount("https://", pooled)
        self.verify: str | bool = ca_file or True

    def call(self, name: str) -> Callable[[], Any]:
        url = self.url
        if name == "llmpool":
            request = self.pool.request
            return lambda: request("GET", url).content
        if name == "urllib3":
            get = self.manager.request
            return lambda: get("GET", url).data
        verify = self.verify  # explicit: REQUESTS_CA_BUNDLE would override session.verify
        if name == "requests.Session":
            return lambda: self.session.get(url, verify=verify).content
        if name == "llmpool+requests":
            return lambda: self.pooled_session.get(url).content
        return lambda: requests.get(url, verify=verify).content

    def close(self) -> None:
        self.pool.close()
        self.manager.clear()
        self.session.close()
        self.pooled_session.close()


@pytest.fixture(scope="module")
def plain(http_server: MockLLMServer) -> Iterator[Fixture]:
    fixture = Fixture(http_server, None)
    yield fixture
    fixture.close()


@pytest.fixture(scope="module")
def tls(https_server: MockLLMServer, tls_files: tuple[ssl.SSLContext, str]) -> Iterator[Fixture]:
    fixture = Fixture(https_server, tls_files[1])
    yield fixture
    fixture.close()


def _measure(benchmark: Any, fixture: Fixture, name: str, threads: int, per_thread: int) -> None:
    call = fixture.call(name)
    call()  # warm-up: the first connection
    requests_per_round = max(1, threads) * per_thread
    before = fixture.server.connections_opened
    with ThreadPoolExecutor(max(1, threads)) as executor:
        if threads == 0:
            requests_per_round = 1
            benchmark.pedantic(call, rounds=300, warmup_rounds=20)
            rounds = 320
        else:
            run = in_threads(executor, threads, per_thread, call)
            benchmark.pedantic(run, rounds=8, warmup_rounds=1)
            rounds = 9
    opened = fixture.server.connections_opened - before
    benchmark.extra_info["requests_per_round"] = requests_per_round
    benchmark.extra_info["per_request_us"] = benchmark.stats.stats.mean / requests_per_round * 1e6
    benchmark.extra_info["connections_per_1000_requests"] = round(
        opened * 1000 / (rounds * requests_per_round), 2
    )


@pytest.mark.parametrize("name", CLIENTS)
def test_http_sequential(benchmark: Any, plain: Fixture, name: str) -> None:
    """One thread, one request at a time, HTTP."""
    benchmark.group = "pool http sequential (per request)"
    _measure(benchmark, plain, name, threads=0, per_thread=10)


@pytest.mark.parametrize("threads", [8, 32])
@pytest.mark.parametrize("name", CLIENTS)
def test_http_threads(benchmark: Any, plain: Fixture, name: str, threads: int) -> None:
    """8 or 32 threads sharing one client, HTTP (a round is threads x 25 requests)."""
    benchmark.group = f"pool http {threads} threads (per round of {threads * 25})"
    _measure(benchmark, plain, name, threads=threads, per_thread=25)


@pytest.mark.parametrize("name", CLIENTS)
def test_https_sequential(benchmark: Any, tls: Fixture, name: str) -> None:
    """One thread, HTTPS with a private CA trusted through ca_certs (verification on)."""
    benchmark.group = "pool https sequential (per request)"
    _measure(benchmark, tls, name, threads=0, per_thread=10)


@pytest.mark.parametrize("threads", [8])
@pytest.mark.parametrize("name", CLIENTS)
def test_https_threads(benchmark: Any, tls: Fixture, name: str, threads: int) -> None:
    """8 threads, HTTPS."""
    benchmark.group = f"pool https {threads} threads (per round of {threads * 25})"
    _measure(benchmark, tls, name, threads=threads, per_thread=25)
