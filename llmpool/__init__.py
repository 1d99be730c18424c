"""llmpool: a synchronous, thread-safe client for LLM HTTP APIs.

One :class:`Client` per process, shared by every thread, over one
:class:`ConnectionPool`; a :class:`MemoryManager` watching the process; and
plugins found through stevedore entry points. See the documentation's
threading page for the contract.
"""

from __future__ import annotations

import logging

from llmpool._version import __version__
from llmpool.client import Client
from llmpool.config import (
    ClientConfig,
    MemoryConfig,
    PoolConfig,
)
from llmpool.config_loading import load_config
from llmpool.exceptions import (
    APIError,
    APIStatusError,
    ConfigError,
    DeadlineExceeded,
    LLMPoolError,
    PoolClosed,
    PoolTimeout,
    TransportError,
)
from llmpool.memory import MemoryManager, MemoryReport, MemoryState
from llmpool.models import (
    CallContext,
    ChatChunk,
    ChatCompletion,
    Choice,
    Embeddings,
    Message,
    Request,
    ToolCall,
    Usage,
)
from llmpool.options import ClientOptions
from llmpool.plugins import ILLMPlugin, LLMPlugin, PluginManager
from llmpool.pool import ConnectionPool, IConnectionPool
from llmpool.retry import RetryPolicy
from llmpool.streaming import Stream

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "APIError",
    "APIStatusError",
    "CallContext",
    "ChatChunk",
    "ChatCompletion",
    "Choice",
    "Client",
    "ClientConfig",
    "ClientOptions",
    "ConfigError",
    "ConnectionPool",
    "DeadlineExceeded",
    "Embeddings",
    "IConnectionPool",
    "ILLMPlugin",
    "LLMPlugin",
    "LLMPoolError",
    "MemoryConfig",
    "MemoryManager",
    "MemoryReport",
    "MemoryState",
    "Message",
    "PluginManager",
    "PoolClosed",
    "PoolConfig",
    "PoolTimeout",
    "Request",
    "RetryPolicy",
    "Stream",
    "ToolCall",
    "TransportError",
    "Usage",
    "__version__",
    "load_config",
]
