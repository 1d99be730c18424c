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
    ├── MemoryPressureError          the memory manager sheds load
    ├── RateLimitExceeded            the ratelimit plugin waited too long
    ├── PluginError                  a critical plugin raised during a call
    └── PluginLoadError              a plugin could not be loaded (strict mode)

Each leaf's docstring says whether retrying the same call is safe. All errors
are picklable (they cross process boundaries in Celery and multiprocessing)
and carry their context as attributes, never the API key.
"""

from __future__ import annotations

from typing import Any

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
    "StreamError",
    "StreamInterrupted",
    "TLSError",
    "TransportError",
    "UnprocessableEntityError",
    "error_for_status",
]

#: How much of a response body an error keeps (characters).
BODY_EXCERPT_CHARS = 500

#: The longest request id kept (characters): a server's id is quoted in
#: errors, logs and results, so a huge one is cut here.
MAX_REQUEST_ID_CHARS = 200


def cap_request_id(value: str | None) -> str | None:
    """*value* cut to :data:`MAX_REQUEST_ID_CHARS` characters (None stays None)."""
    if value is not None and len(value) > MAX_REQUEST_ID_CHARS:
        return value[:MAX_REQUEST_ID_CHARS]
    return value


def excerpt(body: bytes | str | None, limit: int = BODY_EXCERPT_CHARS) -> str:
    """Return a printable excerpt of *body*, at most *limit* characters."""
    if body is None:
        return ""
    if isinstance(body, bytes):
        body = body[: limit * 4].decode("utf-8", "replace")
    if len(body) > limit:
        return body[:limit] + "..."
    return body


class LLMPoolError(Exception):
    """The root of every error llmpool raises.

    Context is passed as keyword arguments and kept as attributes; the
    keywords survive pickling.
    """

    #: Whether retrying the same call may succeed. Subclasses override.
    retryable: bool = False

    def __init__(self, message: str = "", **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self._context = context
        for key, value in context.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # The state carries attributes set after construction (e.g. a stream
        # error's ``delivered``), so they survive pickling too.
        return (_rebuild, (type(self), self.message, self._context), dict(self.__dict__))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[LLMPoolError], message: str, context: dict[str, Any]) -> LLMPoolError:
    return cls(message, **context)


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


# --------------------------------------------------------------------------- API


class APIError(LLMPoolError):
    """The server answered, but not with a usable result.

    Attributes: ``status_code``, ``request_id``, ``body`` (an excerpt).
    """

    status_code: int | None
    request_id: str | None
    body: str


class APIStatusError(APIError):
    """The server answered with a non-2xx status.

    Attributes: ``status_code``, ``request_id``, ``body`` (an excerpt of at
    most 500 characters), ``retry_after`` (seconds, or None) and
    ``error_type`` (the provider's error type, when given).
    """

    retry_after: float | None
    error_type: str | None

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        request_id: str | None = None,
        body: str = "",
        retry_after: float | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(
            message,
            status_code=status_code,
            request_id=request_id,
            body=body,
            retry_after=retry_after,
            error_type=error_type,
        )

    def __str__(self) -> str:
        rid = f", request_id={self.request_id}" if self.request_id else ""
        return f"{self.status_code} {self.message}{rid}"


class BadRequestError(APIStatusError):
    """400: the request is malformed. Never retried."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong. Never retried."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not do this. Never retried."""


class NotFoundError(APIStatusError):
    """404: no such model or endpoint. Never retried."""


class RequestTimeoutError(APIStatusError):
    """408: the server timed out waiting for the request. Retryable."""

    retryable = True


class ConflictError(APIStatusError):
    """409: a conflicting request is in progress. Retryable."""

    retryable = True


class UnprocessableEntityError(APIStatusError):
    """422: the request is well-formed but invalid. Never retried."""


class RateLimitError(APIStatusError):
    """429: too many requests. Retryable after ``retry_after`` seconds."""

    retryable = True


class InternalServerError(APIStatusError):
    """500-599: the server failed. Retryable for 500, 502, 503 and 504 (and
    529, :class:`OverloadedError`); other 5xx (501, 505...) are final."""

    retryable = True


class OverloadedError(InternalServerError):
    """529 (or an ``overloaded_error`` event): the provider is overloaded. Retryable."""

    retryable = True


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: RequestTimeoutError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    529: OverloadedError,
}

#: Statuses that are retryable among the 5xx family.
_RETRYABLE_5XX = frozenset({500, 502, 503, 504, 529})


def error_for_status(
    status_code: int,
    message: str,
    *,
    request_id: str | None = None,
    body: bytes | str | None = None,
    retry_after: float | None = None,
    error_type: str | None = None,
) -> APIStatusError:
    """Build the :class:`APIStatusError` subclass that matches *status_code*.

    Only 500-599 are :class:`InternalServerError` (retryable: 500, 502, 503,
    504, 529); a status without a class of its own (418, 1xx or 3xx given
    as final, 600 and above) is a plain, non-retryable
    :class:`APIStatusError`. *request_id* is capped at
    :data:`MAX_REQUEST_ID_CHARS`.
    """
    cls = _STATUS_ERRORS.get(status_code)
    if cls is None:
        cls = InternalServerError if 500 <= status_code <= 599 else APIStatusError
    err = cls(
        message,
        status_code=status_code,
        request_id=cap_request_id(request_id),
        body=excerpt(body),
        retry_after=retry_after,
        error_type=error_type,
    )
    if isinstance(err, InternalServerError) and status_code not in _RETRYABLE_5XX:
        err.retryable = False
    return err


class InvalidResponse(APIError):
    """The body is not valid JSON or lacks the fields a result needs.

    Attributes: ``status_code``, ``request_id``, ``body`` (an excerpt).
    Not retryable by default: the same server will likely answer the same.
    """


class ResponseTooLarge(APIError):
    """The body exceeded ``max_response_bytes``; reading stopped there. Not retryable."""


class StreamError(APIError):
    """The server sent an error event inside a 200 stream.

    Attributes: ``error_type`` (e.g. ``overloaded_error``), ``request_id``,
    ``text`` (what was received before it), ``delivered`` (whether any chunk
    reached the caller). Retryable only when nothing was delivered and the
    error type is transient.
    """

    error_type: str | None
    text: str
    delivered: bool


class StreamInterrupted(APIError):
    """The connection dropped in the middle of a stream.

    Attributes: ``text`` (the text received so far), ``request_id``,
    ``delivered``. Retried by the client only when no chunk reached the caller.
    """

    retryable = True
    text: str
    delivered: bool


class IncompleteStream(APIError):
    """The stream ended cleanly but without a finish reason, ``[DONE]`` or
    ``message_stop``: the answer is truncated and is never accepted silently.

    Attributes: ``text`` (what was received), ``request_id``, ``delivered``.
    Retried only when no chunk reached the caller.
    """

    retryable = True
    text: str
    delivered: bool


# --------------------------------------------------------------------------- other


class DeadlineExceeded(LLMPoolError):
    """The call's total time budget (``deadline``) is spent.

    Attributes: ``deadline`` (seconds), ``attempts``, ``last_error``. Not
    retried: the deadline is the caller's bound on the whole call.
    """

    deadline: float | None
    attempts: int
    last_error: BaseException | None


class MemoryPressureError(LLMPoolError):
    """The memory manager rejects new calls while memory is above the shed
    threshold (only with ``reject_on_pressure=True``). Attributes: ``state``,
    ``usage``. Retry later, or on another worker.
    """

    retryable = True


class RateLimitExceeded(LLMPoolError):
    """The ``ratelimit`` plugin waited ``timeout`` seconds without a free token.

    Attributes: ``model``, ``waited``. Retry later.
    """

    retryable = True
    model: str
    waited: float


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
