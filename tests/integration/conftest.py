"""Integration-test fixtures: after every test, no pooled connection is left checked out."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from llmpool.pool import connection_pool


@pytest.fixture(autouse=True)
def no_connection_left_checked_out() -> Iterator[None]:
    """Fail a test that leaves a connection of any ConnectionPool in use."""
    before = set(map(id, connection_pool._FORK_WATCH))
    yield
    gc.collect()  # collect abandoned streams so their finalizers return connections
    for pool in list(connection_pool._FORK_WATCH):
        if id(pool) in before:
            continue
        in_use = pool.get_stats()["in_use"]
        assert in_use == 0, f"{pool!r} has {in_use} connection(s) still checked out"
