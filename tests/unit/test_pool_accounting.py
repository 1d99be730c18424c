"""ConnectionPool bookkeeping without sockets: acquire/release accounting and host eviction.

The connections handed out here are never connected: urllib3 opens a socket
only when a request is sent, and these tests send none.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmpool import PoolConfig
from llmpool import exceptions as errors
from llmpool.pool import ConnectionPool

A = "http://127.0.0.1:1"
B = "http://127.0.0.1:2"
C = "http://127.0.0.1:3"


@pytest.fixture
def pool() -> Iterator[ConnectionPool]:
    with ConnectionPool(PoolConfig(max_connections=2, pool_timeout=0.01, max_hosts=2)) as p:
        yield p


def test_acquire_counts_in_use_and_release_gives_it_back(pool: ConnectionPool) -> None:
    """acquire() raises in_use and peak_in_use; release() brings in_use back to zero."""
    first = pool.acquire(A)
    second = pool.acquire(A + "/v1/anything")
    stats = pool.get_stats()
    assert first is not second
    assert stats["in_use"] == stats["peak_in_use"] == 2
    assert stats["waiting"] == 0
    assert stats["acquire_wait"]["count"] == 2
    pool.release(A, first)
    assert pool.get_stats()["in_use"] == 1
    pool.release(A, second)
    stats = pool.get_stats()
    assert stats["in_use"] == 0
    assert stats["peak_in_use"] == 2
    assert stats["hosts"]["http://127.0.0.1:1"]["in_use"] == 0


def test_released_connection_is_handed_out_again(pool: ConnectionPool) -> None:
    """A released connection goes back to the host's queue and is the next one out."""
    conn = pool.acquire(A)
    pool.release(A, conn)
    again = pool.acquire(A)
    try:
        assert again is conn
    finally:
        pool.release(A, again)


def test_acquire_beyond_the_cap_times_out_and_is_counted(pool: ConnectionPool) -> None:
    """With every connection out, acquire() waits pool_timeout, raises PoolTimeout and counts it."""
    held = [pool.acquire(A), pool.acquire(A)]
    with pytest.raises(errors.PoolTimeout, match="max_connections=2"):
        pool.acquire(A)
    stats = pool.get_stats()
    assert stats["pool_timeouts"] == 1
    assert stats["waiting"] == 0
    assert stats["in_use"] == 2
    for conn in held:
        pool.release(A, conn)


def test_a_second_release_of_the_same_connection_is_not_counted_twice(
    pool: ConnectionPool,
) -> None:
    """in_use never goes below zero: the statistics ignore a repeated return."""
    conn = pool.acquire(A)
    other = pool.acquire(A)
    pool.release(A, conn)
    stats = pool._hosts["http://127.0.0.1:1"][1]
    stats.returned(conn)
    assert pool.get_stats()["in_use"] == 1
    pool.release(A, other)


def test_hosts_beyond_max_hosts_evict_the_oldest_idle_one(pool: ConnectionPool) -> None:
    """A third host evicts the first (nothing in use); its counters stay in the totals."""
    held = [pool.acquire(A), pool.acquire(A)]
    with pytest.raises(errors.PoolTimeout):
        pool.acquire(A)
    for conn in held:
        pool.release(A, conn)
    evicted = pool.host_pool(A)
    pool.host_pool(B)
    pool.host_pool(C)
    stats = pool.get_stats()
    assert sorted(stats["hosts"]) == ["http://127.0.0.1:2", "http://127.0.0.1:3"]
    assert stats["pool_timeouts"] == 1  # folded in from the evicted host
    assert evicted.pool is None  # the evicted host pool was closed


def test_host_with_a_connection_in_use_is_never_evicted(pool: ConnectionPool) -> None:
    """Eviction skips a host with a connection out and takes the next oldest idle one."""
    conn = pool.acquire(A)
    pool.host_pool(B)
    pool.host_pool(C)
    stats = pool.get_stats()
    assert sorted(stats["hosts"]) == ["http://127.0.0.1:1", "http://127.0.0.1:3"]
    assert stats["in_use"] == 1
    pool.release(A, conn)
    assert pool.get_stats()["in_use"] == 0


def test_release_to_an_evicted_host_closes_the_connection(pool: ConnectionPool) -> None:
    """A connection whose host was forgotten is closed on release, not queued anywhere."""
    conn = pool.acquire(A)
    closed: list[bool] = []
    conn.close = lambda: closed.append(True)
    pool._hosts.clear()  # as if A had been evicted while the connection was out
    pool.release(A, conn)
    assert closed == [True]


def test_closed_pool_refuses_acquire(pool: ConnectionPool) -> None:
    """After close(), acquire() raises PoolClosed naming the (redacted) URL."""
    pool.close()
    with pytest.raises(errors.PoolClosed) as info:
        pool.acquire("http://user:secret@127.0.0.1:1")
    assert "secret" not in str(info.value)
    assert pool.closed


def test_a_url_that_is_not_http_is_a_config_error(pool: ConnectionPool) -> None:
    """acquire() refuses a non-http(s) URL with a ConfigError on base_url."""
    with pytest.raises(errors.ConfigError) as info:
        pool.acquire("ftp://127.0.0.1/")
    assert info.value.key == "base_url"
