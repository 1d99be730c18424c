"""The connection pool: one urllib3 PoolManager shared by every thread."""

from __future__ import annotations

from llmpool.pool.connection_pool import ConnectionPool
from llmpool.pool.interfaces import IConnectionPool
from llmpool.pool.response import Response

__all__ = ["ConnectionPool", "IConnectionPool", "Response"]
