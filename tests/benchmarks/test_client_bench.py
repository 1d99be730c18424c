"""Per-call cost of Client.chat (JSON and streaming) beside raw urllib3 + json and the openai SDK.

Every contender sends the same chat request to the same MockLLMServer and
decodes the same answer. Run::

    tox -e bench -- tests/benchmarks/test_client_bench.py
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3
from conftest import CannedTransport

import llmpool
from llmpool.testing import MockLLMServer

MESSAGES = [{"role": "user", "content": "hi"}]
BODY = json.dumps({"model": "m", "messages": MESSAGES}).encode()
STREAM_BODY = json.dumps({"model": "m", "messages": MESSAGES, "stream": True}).encode()
# The same headers llmpool sends (an Idempotency-Key included), so only client work differs.
HEADERS = {
    "User-Agent": "raw/0.1.0",
    "Accept": "application/json",
    "Content-Type": "application/json",
    "Authorization": "Bearer k",
    "Idempotency-Key": "raw-9a61f8828ca048ccbb879e83d1f92c2e",
}


@pytest.fixture(scope="module")
def server(http_server: MockLLMServer) -> MockLLMServer:
    return http_server


@pytest.fixture(scope="module")
def client(server: MockLLMServer) -> Iterator[llmpool.Client]:
    with llmpool.Client(server.base_url, api_key="k") as c:
        yield c


@pytest.fixture(scope="module")
def manager() -> Iterator[urllib3.PoolManager]:
    pm = urllib3.PoolManager(maxsize=10, block=True)
    yield pm
    pm.clear()


def _raw_chat(pm: urllib3.PoolManager, url: str) -> Callable[[], str]:
    def call() -> str:
        response = pm.request("POST", url, body=BODY, headers=HEADERS)
        data = json.loads(response.data)
        return str(data["choices"][0]["message"]["content"])

    return call


def _raw_stream(pm: urllib3.PoolManager, url: str) -> Callable[[], str]:
    def call() -> str:
        response = pm.request("POST", url, body=STREAM_BODY, headers=HEADERS, preload_content=False)
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


def _openai_client(server: MockLLMServer) -> Any:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)


@pytest.mark.parametrize("name", ["llmpool", "urllib3+json", "openai"])
def test_chat_json(
    benchmark: Any,
    name: str,
    server: MockLLMServer,
    client: llmpool.Client,
    manager: urllib3.PoolManager,
) -> None:
    """One non-streamed chat call."""
    benchmark.group = "client chat (JSON)"
    if name == "llmpool":

        def call() -> str:
            return client.chat("m", MESSAGES).text

    elif name == "urllib3+json":
        call = _raw_chat(manager, server.url("/v1/chat/completions"))
    else:
        sdk = _openai_client(server)

        def call() -> str:
            reply = sdk.chat.completions.create(model="m", messages=MESSAGES)
            return str(reply.choices[0].message.content)

    assert call() == "Hello from the mock server."
    benchmark.pedantic(call, rounds=300, warmup_rounds=20)


@pytest.mark.parametrize("name", ["llmpool", "urllib3+sse", "openai"])
def test_chat_stream(
    benchmark: Any,
    name: str,
    server: MockLLMServer,
    client: llmpool.Client,
    manager: urllib3.PoolManager,
) -> None:
    """One streamed chat call, read to the end."""
    benchmark.group = "client chat (stream)"
    if name == "llmpool":

        def call() -> str:
            with client.chat("m", MESSAGES, stream=True) as stream:
                return "".join(chunk.delta for chunk in stream)

    elif name == "urllib3+sse":
        call = _raw_stream(manager, server.url("/v1/chat/completions"))
    else:
        sdk = _openai_client(server)

        def call() -> str:
            stream = sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            return "".join((c.choices[0].delta.content or "") for c in stream if c.choices)

    assert call() == "Hello from the mock server."
    benchmark.pedantic(call, rounds=300, warmup_rounds=20)


def test_client_work_without_network(
    benchmark: Any, manager: urllib3.PoolManager, server: MockLLMServer
) -> None:
    """llmpool's own work per chat call (build, headers, key, retry loop, parse), the
    transport replaced by a canned answer; beside it json.loads of the same body."""
    benchmark.group = "client work without network"
    body = manager.request(
        "POST", server.url("/v1/chat/completions"), body=BODY, headers=HEADERS
    ).data
    with llmpool.Client("http://127.0.0.1:9/v1", api_key="k", pool=CannedTransport(body)) as c:
        assert c.chat("m", MESSAGES).text == "Hello from the mock server."
        benchmark.pedantic(lambda: c.chat("m", MESSAGES), rounds=2000, warmup_rounds=200)
    benchmark.extra_info["json_loads_us"] = _time_json_loads(body)


def _time_json_loads(body: bytes) -> float:
    import time

    started = time.perf_counter()
    for _ in range(2000):
        json.loads(body)
    return (time.perf_counter() - started) / 2000 * 1e6
