"""Integration-test fixtures: after every test, no pooled connection is left checked out."""

from __future__ import annotations

import functools
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from llmpool.pool.connection_pool import ConnectionPool


@pytest.fixture(autouse=True)
def no_connection_left_checked_out() -> Iterator[None]:
    """Fail a test that leaves a connection of any ConnectionPool it created in use.

    Every ConnectionPool built during the test (directly, by a Client, in a
    fixture or in another thread) is held by a strong reference until the
    check, so a pool the test dropped is checked too: a leaked response or an
    acquire() without release() keeps its connection counted as checked out
    even after the pool itself became garbage.
    """
    created: list[ConnectionPool] = []
    original_init = ConnectionPool.__init__

    @functools.wraps(original_init)
    def tracking_init(self: ConnectionPool, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        created.append(self)

    ConnectionPool.__init__ = tracking_init  # type: ignore[method-assign]
    try:
        yield
    finally:
        ConnectionPool.__init__ = original_init  # type: ignore[method-assign]
    gc.collect()  # abandoned streams whose finalizers return connections
    leaks = []
    for pool in created:
        in_use = pool.get_stats()["in_use"]
        if in_use:
            leaks.append(f"{pool!r} has {in_use} connection(s) still checked out")
    created.clear()
    assert not leaks, "; ".join(leaks)
