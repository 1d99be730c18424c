"""How an attempt's error reads to an endpoint group: pure functions.

- :func:`fails_over`: the error says the endpoint (not the request) failed,
  so another endpoint, or a fallback model, may answer: a connection that
  could not open or broke before an answer, a timeout, a full pool, 408,
  429, 5xx and 529, a stream that broke before delivering anything, every
  endpoint cooling down. A 4xx that names the request (400, 401, 403, 404,
  422...) is final: another endpoint would refuse it too.
- :func:`outcome_of`: the :class:`~llmpool.endpoints.health.Outcome` the
  health book counts: what fails over, and a stream broken after delivery
  too (it cannot fail over, but the endpoint failed).
- :func:`is_context_window_error`: the "prompt too long" 400 that both
  providers send, which a model with a larger context window may answer.
"""

from __future__ import annotations

from llmpool.endpoints.health import Outcome
from llmpool.exceptions import (
    APIStatusError,
    ConnectError,
    ConnectTimeout,
    EndpointsUnavailable,
    IncompleteStream,
    LLMPoolError,
    PoolClosed,
    ProtocolError,
    StreamError,
    StreamInterrupted,
    TLSError,
    TransportError,
)

__all__ = ["describe", "fails_over", "is_context_window_error", "outcome_of"]

#: Statuses that say the endpoint, not the request, failed.
FAILOVER_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})

#: Phrases of the providers' "prompt too long" errors (lower case).
_CONTEXT_PHRASES = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "prompt is too long",
    "too many tokens",
    "reduce the length",
)


def fails_over(err: BaseException) -> bool:
    """Whether another endpoint (or a fallback model) may answer after *err*."""
    if isinstance(err, APIStatusError):
        status = err.status_code or 0
        return status in FAILOVER_STATUSES or 500 <= status <= 599
    if isinstance(err, (StreamError, StreamInterrupted, IncompleteStream)):
        return not getattr(err, "delivered", False)
    if isinstance(err, (PoolClosed, TLSError)):
        return isinstance(err, TLSError)  # a closed pool is ours; TLS is the endpoint's
    return isinstance(err, (TransportError, EndpointsUnavailable))


def outcome_of(err: BaseException | None, latency: float | None = None) -> Outcome:
    """What the health book counts for an attempt that ended with *err* (None: success)."""
    broken_stream = isinstance(err, (StreamError, StreamInterrupted, IncompleteStream))
    if err is None or not (fails_over(err) or broken_stream):
        return Outcome(ok=True, latency=latency)
    retry_after = None
    if isinstance(err, APIStatusError) and err.status_code in (429, 503):
        retry_after = err.retry_after
    return Outcome(
        ok=False,
        connection_failure=isinstance(err, (ConnectError, ConnectTimeout, ProtocolError, TLSError)),
        retry_after=retry_after,
        error=describe(err),
    )


def describe(err: BaseException) -> str:
    """``"ClassName: message"``, at most 200 characters (messages never hold secrets)."""
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= 200 else text[:197] + "..."


def is_context_window_error(err: LLMPoolError) -> bool:
    """Whether *err* is a 400 saying the prompt does not fit the model's context."""
    if not isinstance(err, APIStatusError) or err.status_code not in (400, 413, 422):
        return False
    text = " ".join(
        str(part)
        for part in (err, getattr(err, "body", None), getattr(err, "error_type", None))
        if part is not None
    ).lower()
    return any(phrase in text for phrase in _CONTEXT_PHRASES)
