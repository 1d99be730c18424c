"""The :class:`APIError` branch of llmpool's error tree (private).

The server answered, but not with a result: non-2xx statuses (one class per
status that matters, built by :func:`error_for_status`), bodies that are not
a result, and broken streams. Import these from :mod:`llmpool.exceptions`,
which re-exports them; this module builds only on the private root.
"""

from __future__ import annotations

from llmpool._error_root import LLMPoolError, cap_request_id, excerpt

__all__ = [
    "APIError",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "IncompleteStream",
    "InternalServerError",
    "InvalidResponse",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseTooLarge",
    "StreamError",
    "StreamInterrupted",
    "UnprocessableEntityError",
    "error_for_status",
]


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
    """429: the *server* said too many requests. Retryable after
    ``retry_after`` seconds (from ``Retry-After``; the retry loop honours it).

    Not to be confused with :class:`~llmpool.exceptions.RateLimitExceeded`,
    which is llmpool's own ``ratelimit`` plugin giving up on its local wait
    before any request was sent.
    """

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
