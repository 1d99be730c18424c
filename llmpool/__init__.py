"""llmpool: a synchronous, thread-safe client for LLM HTTP APIs.

One :class:`Client` per process, shared by every thread, over one
:class:`ConnectionPool`; a :class:`MemoryManager` watching the process; and
plugins found through stevedore entry points. See the documentation's
threading page for the contract.
"""

from __future__ import annotations

import logging

from llmpool._version import __version__
from llmpool.config import MemoryConfig, PoolConfig
from llmpool.exceptions import (
    APIError,
    APIStatusError,
    ConfigError,
    DeadlineExceeded,
    LLMPoolError,
    TransportError,
)
from llmpool.models import (
    CallContext,
    ChatChunk,
    ChatCompletion,
    Choice,
    Embeddings,
    Message,
    Request,
    Usage,
)

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "APIError",
    "APIStatusError",
    "CallContext",
    "ChatChunk",
    "ChatCompletion",
    "Choice",
    "ConfigError",
    "DeadlineExceeded",
    "Embeddings",
    "LLMPoolError",
    "MemoryConfig",
    "Message",
    "PoolConfig",
    "Request",
    "TransportError",
    "Usage",
    "__version__",
]
