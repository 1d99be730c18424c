"""The integration leak guard (conftest.py) fails a test that leaks a connection.

The guard's conftest is copied into a pytester directory with a few tests that
leak on a pool they create and drop; they run in a child pytest, so their
leaks never reach this process. The pool is gone by the time the guard runs:
a guard that only looked at pools still alive would let all of them pass.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

GUARD = Path(__file__).with_name("conftest.py")

LEAKY_TESTS = textwrap.dedent(
    '''
    import pytest

    import llmpool
    from llmpool import ConnectionPool
    from llmpool.testing import MockLLMServer

    KEPT = []


    @pytest.fixture
    def server():
        with MockLLMServer() as started:
            yield started


    def test_raw_stream_kept_open(server):
        """Leaks: a streamed raw response stays referenced, never closed; the pool is dropped."""
        pool = ConnectionPool()
        KEPT.append(pool.request("GET", server.base_url + "/models", stream=True))


    def test_raw_stream_dropped_unclosed(server):
        """Leaks: a streamed raw response is dropped without close (no finalizer returns it)."""
        pool = ConnectionPool()
        pool.request("GET", server.base_url + "/models", stream=True)


    def test_acquire_without_release(server):
        """Leaks: a connection checked out with acquire() is never released."""
        pool = ConnectionPool()
        KEPT.append(pool.acquire(server.base_url))


    def test_raw_stream_closed(server):
        """Clean: the streamed raw response is closed."""
        pool = ConnectionPool()
        pool.request("GET", server.base_url + "/models", stream=True).close()
        assert pool.get_stats()["in_use"] == 0


    def test_acquire_then_release(server):
        """Clean: acquire() is paired with release()."""
        pool = ConnectionPool()
        pool.release(server.base_url, pool.acquire(server.base_url))


    def test_client_stream_dropped_unclosed(server):
        """Clean: a Stream dropped without close returns its connection when collected."""
        client = llmpool.Client(base_url=server.base_url, api_key="k")
        stream = client.chat(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
        next(iter(stream))
        del stream
        client.close()
    '''
)


def test_leak_guard_fails_the_tests_that_leak_on_a_dropped_pool(pytester: pytest.Pytester) -> None:
    """Each leaking test errors in the guard's teardown, naming the pool; clean tests pass."""
    pytester.makeconftest(GUARD.read_text())
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    result = pytester.runpytest_subprocess("-ra", "-vv", "-p", "no:cacheprovider")
    # a leaking test passes its call and errors in the guard's teardown
    result.assert_outcomes(passed=6, errors=3)
    result.stdout.fnmatch_lines_random(
        [
            f"ERROR test_leaky.py::{name} - AssertionError: <ConnectionPool * "
            "has 1 connection(s) still checked out"
            for name in (
                "test_raw_stream_kept_open",
                "test_raw_stream_dropped_unclosed",
                "test_acquire_without_release",
            )
        ]
    )
