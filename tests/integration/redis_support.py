"""Reaching a real Redis in tests: the URL, skip-or-fail, unique prefixes, own servers.

``LLMPOOL_TEST_REDIS_URL`` names the server (default the local one). When no
Redis answers, the tests that need one skip with the reason, except with
``LLMPOOL_REQUIRE_REDIS=1`` (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

redis = pytest.importorskip("redis", reason="the redis extra is not installed")

URL = os.environ.get("LLMPOOL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRED = os.environ.get("LLMPOOL_REQUIRE_REDIS") == "1"


def redis_url() -> str:
    """The test Redis URL, after checking that it answers (skip or fail otherwise)."""
    try:
        client = redis.Redis.from_url(URL, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        client.close()
    except (redis.exceptions.RedisError, OSError) as exc:
        reason = f"no Redis answers at {URL} ({type(exc).__name__}); set LLMPOOL_TEST_REDIS_URL"
        if REQUIRED:
            pytest.fail(f"LLMPOOL_REQUIRE_REDIS=1 but {reason}")
        pytest.skip(reason)
    return URL


@pytest.fixture
def redis_url_fixture() -> str:
    return redis_url()


@pytest.fixture
def prefix(redis_url_fixture: str) -> Iterator[str]:
    """A key prefix of this test alone; every key under it is deleted afterwards."""
    name = f"llmpool-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url_fixture)
    keys = [*client.scan_iter(match=f"{name}:*"), *client.scan_iter(match=f"{{{name}:*")]
    if keys:
        client.delete(*keys)
    client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A redis-server of the test's own on a free port, to kill and restart."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if REQUIRED:
                pytest.fail("LLMPOOL_REQUIRE_REDIS=1 but redis-server is not installed")
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        for _ in range(200):
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                client.ping()
                client.close()
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    yield server
    server.kill()
