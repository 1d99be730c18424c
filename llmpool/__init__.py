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
from llmpool.endpoints import Endpoint, HealthConfig
from llmpool.exceptions import (
    APIError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    ConnectError,
    ConnectTimeout,
    DeadlineExceeded,
    EndpointsUnavailable,
    IncompleteStream,
    InternalServerError,
    InvalidResponse,
    LLMPoolError,
    MemoryPressureError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    PluginError,
    PluginLoadError,
    PoolClosed,
    PoolTimeout,
    ProtocolError,
    RateLimitError,
    RateLimitExceeded,
    ReadTimeout,
    RequestTimeoutError,
    ResponseTooLarge,
    StateBackendError,
    StreamError,
    StreamInterrupted,
    TLSError,
    TransportError,
    UnprocessableEntityError,
    error_for_status,
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
from llmpool.params import CallParams
from llmpool.plugins import ILLMPlugin, LLMPlugin, PluginManager
from llmpool.pool import ConnectionPool, IConnectionPool
from llmpool.retry import RetryPolicy
from llmpool.state import StateConfig
from llmpool.streaming import Stream

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "APIError",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "CallContext",
    "CallParams",
    "ChatChunk",
    "ChatCompletion",
    "Choice",
    "Client",
    "ClientConfig",
    "ClientOptions",
    "ConfigError",
    "ConflictError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionPool",
    "DeadlineExceeded",
    "Embeddings",
    "Endpoint",
    "EndpointsUnavailable",
    "HealthConfig",
    "IConnectionPool",
    "ILLMPlugin",
    "IncompleteStream",
    "InternalServerError",
    "InvalidResponse",
    "LLMPlugin",
    "LLMPoolError",
    "MemoryConfig",
    "MemoryManager",
    "MemoryPressureError",
    "MemoryReport",
    "MemoryState",
    "Message",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "PluginError",
    "PluginLoadError",
    "PluginManager",
    "PoolClosed",
    "PoolConfig",
    "PoolTimeout",
    "ProtocolError",
    "RateLimitError",
    "RateLimitExceeded",
    "ReadTimeout",
    "Request",
    "RequestTimeoutError",
    "ResponseTooLarge",
    "RetryPolicy",
    "StateBackendError",
    "StateConfig",
    "Stream",
    "StreamError",
    "StreamInterrupted",
    "TLSError",
    "ToolCall",
    "TransportError",
    "UnprocessableEntityError",
    "Usage",
    "__version__",
    "error_for_status",
    "load_config",
]
