"""The one exception tree of llmpool.

Every error that llmpool raises to a caller is an :class:`LLMPoolError`. No
urllib3, ``http.client``, ``json`` or stevedore exception crosses the public
surface: the transport translates at exactly one boundary and chains the cause
(``raise ... from exc``), so ``err.__cause__`` still shows what happened below.

::

    LLMPoolError
    ├── ConfigError                  bad configuration value, key or file
    ├── TransportError               the exchange with the server failed
    │   ├── ConnectError             could not open a connection (refused, DNS)
    │   ├── ConnectTimeout           opening the connection took too long
    │   ├── ReadTimeout              the server stopped sending within read_timeout
    │   ├── ProtocolError            the connection broke or spoke bad HTTP
    │   ├── TLSError                 the TLS handshake or verification failed
    │   ├── PoolTimeout              no free connection within pool_timeout
    │   └── PoolClosed               the pool was closed
    ├── APIError                     the server answered, but not with a result
    │   ├── APIStatusError           a non-2xx status
    │   │   ├── BadRequestError            400
    │   │   ├── AuthenticationError        401
    │   │   ├── PermissionDeniedError      403
    │   │   ├── NotFoundError              404
    │   │   ├── RequestTimeoutError        408
    │   │   ├── ConflictError              409
    │   │   ├── UnprocessableEntityError   422
    │   │   ├── RateLimitError             429
    │   │   ├── InternalServerError        500-599
    │   │   └── OverloadedError            529
    │   ├── InvalidResponse          the body is not valid JSON or has the wrong shape
    │   ├── ResponseTooLarge         the body exceeded max_response_bytes
    │   ├── StreamError              an error event inside a 200 stream
    │   ├── StreamInterrupted        the connection dropped in the middle of a stream
    │   └── IncompleteStream         the stream ended without a finish marker
    ├── DeadlineExceeded             the call's total time budget is spent
    ├── EndpointsUnavailable         every endpoint of a group is cooling down
    ├── MemoryPressureError          the memory manager sheds load
    ├── RateLimitExceeded            the ratelimit plugin waited too long
    ├── StateBackendError            the shared-state backend (Redis) failed, policy deny
    ├── PluginError                  a critical plugin raised during a call
    └── PluginLoadError              a plugin could not be loaded (strict mode)

Each leaf's docstring says whether retrying the same call is safe. All errors
are picklable (they cross process boundaries in Celery and multiprocessing)
and carry their context as attributes, never the API key.
"""

from __future__ import annotations

from typing import Any

from llmpool import _api_errors, _error_root
from llmpool._api_errors import (
    APIError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    IncompleteStream,
    InternalServerError,
    InvalidResponse,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseTooLarge,
    StreamError,
    StreamInterrupted,
    UnprocessableEntityError,
    error_for_status,
)
from llmpool._error_root import LLMPoolError

__all__ = [
    "APIError",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "ConnectError",
    "ConnectTimeout",
    "DeadlineExceeded",
    "EndpointsUnavailable",
    "IncompleteStream",
    "InternalServerError",
    "InvalidResponse",
    "LLMPoolError",
    "MemoryPressureError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "PluginError",
    "PluginLoadError",
    "PoolClosed",
    "PoolTimeout",
    "ProtocolError",
    "RateLimitError",
    "RateLimitExceeded",
    "ReadTimeout",
    "RequestTimeoutError",
    "ResponseTooLarge",
    "StateBackendError",
    "StreamError",
    "StreamInterrupted",
    "TLSError",
    "TransportError",
    "UnprocessableEntityError",
    "error_for_status",
]

#: How much of a response body an error keeps (characters).
BODY_EXCERPT_CHARS = _error_root.BODY_EXCERPT_CHARS

#: The longest request id kept (characters): a server's id is quoted in
#: errors, logs and results, so a huge one is cut here.
MAX_REQUEST_ID_CHARS = _error_root.MAX_REQUEST_ID_CHARS

excerpt = _error_root.excerpt
cap_request_id = _error_root.cap_request_id
_rebuild = _error_root._rebuild  # pickles made before the split name it here


class ConfigError(LLMPoolError, ValueError):
    """A configuration value, key or file is wrong.

    Attributes: ``key`` (the dotted key path, e.g.
    ``connection_pool.max_connections``), ``value``, ``file`` and ``line``
    when known. Not retryable: fix the configuration.
    """

    key: str | None
    file: str | None
    line: int | None

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        value: Any = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        parts = [message]
        where = []
        if file:
            where.append(f"file {file}" + (f", line {line}" if line else ""))
        if key and key not in message:
            where.append(f"key {key}")
        if where:
            parts.append(f"({'; '.join(where)})")
        super().__init__(" ".join(parts), key=key, value=value, file=file, line=line)
        self.message = message

    def __str__(self) -> str:
        return str(self.args[0])


# --------------------------------------------------------------------------- transport


class TransportError(LLMPoolError):
    """The exchange with the server failed below HTTP. Attributes: ``url``."""


class ConnectError(TransportError):
    """No connection could be opened (refused, unreachable, DNS).

    Safe to retry: the server never saw the request.
    """

    retryable = True


class ConnectTimeout(TransportError):
    """Opening the connection took longer than ``connect_timeout``.

    Safe to retry: the server never saw the request.
    """

    retryable = True


class ReadTimeout(TransportError):
    """The server sent nothing for ``read_timeout`` seconds.

    The server may have processed the request: retry only when the request
    is idempotent or carries an ``Idempotency-Key`` (llmpool's LLM calls do).
    """

    retryable = True


class ProtocolError(TransportError):
    """The connection broke (reset, closed, broken pipe) or spoke bad HTTP.

    Retryable when no response byte arrived; the pool already retried once
    on a fresh connection when the broken one was a reused keep-alive socket.
    """

    retryable = True


class TLSError(TransportError):
    """The TLS handshake or certificate verification failed.

    Not retryable: the same certificate will fail again.
    """


class PoolTimeout(TransportError):
    """Every connection to the host stayed busy for ``pool_timeout`` seconds.

    Retrying later is safe (the request was never sent), but the usual fix is
    a larger ``max_connections`` or finding connections that are not released.
    """

    retryable = True


class PoolClosed(TransportError):
    """The connection pool was closed; build a new one. Not retryable."""


# --------------------------------------------------------------------------- other


class DeadlineExceeded(LLMPoolError):
    """The call's total time budget (``deadline``) is spent.

    Attributes: ``deadline`` (seconds), ``attempts``, ``last_error``. Not
    retried: the deadline is the caller's bound on the whole call.
    """

    deadline: float | None
    attempts: int
    last_error: BaseException | None


class EndpointsUnavailable(LLMPoolError):
    """Every endpoint of the client's group that serves the model is cooling
    down, and the first to come back would not within the call's deadline
    (or the group does not wait for recovery).

    Attributes: ``model`` and ``endpoints``, a dict from each candidate
    endpoint's name to its last error (``"ConnectError: ..."``, or None).
    Nothing was sent to a cooling endpoint. Retry later.
    """

    retryable = True
    model: str | None
    endpoints: dict[str, str | None]


class MemoryPressureError(LLMPoolError):
    """The memory manager rejects new calls while memory is above the shed
    threshold (only with ``reject_on_pressure=True``). Attributes: ``state``,
    ``usage``. Retry later, or on another worker.
    """

    retryable = True


class RateLimitExceeded(LLMPoolError):
    """The ``ratelimit`` plugin waited ``timeout`` seconds without a free token.

    This is llmpool's own client-side limiter: no request reached the server.
    Not to be confused with :class:`RateLimitError`, the server's HTTP 429
    answer. Attributes: ``model``, ``waited``. Retry later.
    """

    retryable = True
    model: str
    waited: float


class StateBackendError(LLMPoolError):
    """The shared-state backend (Redis) could not be reached or refused the
    command (refused, timed out, ``READONLY``, restarting), and the state's
    ``on_backend_error`` policy is ``deny``.

    Raised before the call is sent (no request reached the server), never
    after an answer arrived. Attributes: ``backend``, ``operation`` and
    ``reason`` (the error's class name; never the URL or a password). Safe
    to retry once the backend is back.
    """

    retryable = True
    backend: str
    operation: str
    reason: str


class PluginError(LLMPoolError):
    """A plugin marked ``critical`` raised during a call.

    Attributes: ``plugin``, ``hook``; the plugin's exception is the cause.
    Whether a retry helps depends on the plugin.
    """

    plugin: str
    hook: str


class PluginLoadError(LLMPoolError):
    """A plugin could not be loaded (raised only in strict mode; otherwise the
    failure is recorded in ``stats()``). Attributes: ``plugin``, ``source``,
    ``reason``.
    """

    plugin: str
    source: str
    reason: str


def _adopt() -> None:
    """Show the re-exported classes (in reprs, tracebacks, pickles and the
    docs) as what users import: ``llmpool.exceptions.<name>``."""
    for name in _api_errors.__all__:
        getattr(_api_errors, name).__module__ = __name__
    for obj in (LLMPoolError, cap_request_id, excerpt, _rebuild):
        obj.__module__ = __name__


_adopt()
