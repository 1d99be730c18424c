"""Benchmark helpers: a mock server, a TLS variant with a throwaway CA, thread runners."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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
