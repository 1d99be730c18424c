"""Checkout: a free slot is taken without counting a wait; a full pool waits, counted."""

from __future__ import annotations

import pytest
from urllib3.exceptions import EmptyPoolError

from llmpool import ConnectionPool, PoolConfig
from llmpool.pool.stats import HostStats


def test_free_slot_is_taken_without_a_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[int] = []
    original = HostStats.wait_started

    def counted(self: HostStats) -> None:
        waits.append(1)
        original(self)

    monkeypatch.setattr(HostStats, "wait_started", counted)
    with ConnectionPool(PoolConfig(max_connections=1)) as pool:
        host_pool = pool.host_pool("http://127.0.0.1:9/")
        conn = host_pool._get_conn()
        stats = host_pool.llm_stats
        assert (stats.waiting, stats.in_use, waits) == (0, 1, [])
        with pytest.raises(EmptyPoolError):
            host_pool._get_conn(timeout=0.01)  # full: waits, counted, gives up
        assert (stats.waiting, stats.counters["pool_timeouts"], waits) == (0, 1, [1])
        host_pool._put_conn(conn)
        assert stats.in_use == 0
        host_pool._put_conn(host_pool._get_conn())
        assert waits == [1]
