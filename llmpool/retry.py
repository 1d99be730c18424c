"""The retry policy: a frozen value and pure functions.

Nothing here sleeps, reads the network or keeps state. The client's retry
loop asks three questions after a failed attempt and acts on the answers:

1. :func:`should_retry` -- may this error be retried at all, and is there an
   attempt left?
2. :func:`next_delay` -- how long to wait first: the server's ``Retry-After``
   when it sent one, else a jittered backoff whose floor grows.
3. :meth:`Deadline.allows` -- does that wait still fit in the call's total
   time budget? If not, the client raises
   :class:`~llmpool.exceptions.DeadlineExceeded` at once instead of sleeping
   into the deadline.

The clock and the random source are arguments, so tests never sleep and
never depend on chance.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, overload

import attrs

from llmpool.exceptions import (
    APIStatusError,
    ConfigError,
    ConnectError,
    ConnectTimeout,
    DeadlineExceeded,
    IncompleteStream,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    StreamError,
    StreamInterrupted,
)
from llmpool.validators import boolean, int_between, seconds

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "Deadline",
    "RetryPolicy",
    "get_header",
    "next_delay",
    "parse_retry_after",
    "should_retry",
]

#: Statuses retried by default: timeouts, conflicts, throttling, server errors.
DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

#: The exponent of the backoff stops growing here (2**62 * base is already huge).
_MAX_EXPONENT = 62


def _status_set(value: Any) -> Any:
    """Converter: any iterable of statuses becomes a frozenset; other values pass to the check."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        return value
    return frozenset(value)


def _statuses(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: a set of HTTP status codes (integers 100-599)."""
    ok = isinstance(value, frozenset) and all(
        isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in value
    )
    if not ok:
        raise ConfigError(
            f"{attribute.name} must be a set of HTTP status codes (100-599), got {value!r}",
            key=attribute.name,
            value=value,
        )


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When and how long to wait before trying a failed call again. Immutable;
    share freely between threads and change with :func:`attrs.evolve`.

    Bounded twice: by ``max_attempts`` here and by the call's total
    ``deadline`` (see :class:`~llmpool.retry.Deadline`). Times are in seconds.
    """

    #: Total attempts, the first one included (1 disables retries).
    max_attempts: int = attrs.field(default=3, validator=int_between(1, 100))
    #: The first retry waits between half and all of this; both double per attempt.
    base_delay: float = attrs.field(default=0.5, validator=seconds(zero=True))
    #: No backoff wait is longer than this (a ``Retry-After`` may be, up to ``max_retry_after``).
    max_delay: float = attrs.field(default=8.0, validator=seconds(zero=True))
    #: A ``Retry-After`` longer than this is not waited for: the error is raised at once.
    max_retry_after: float = attrs.field(default=60.0, validator=seconds(zero=True))
    #: HTTP statuses worth another attempt; every other status is final.
    retry_statuses: frozenset[int] = attrs.field(
        default=DEFAULT_RETRY_STATUSES, converter=_status_set, validator=_statuses
    )
    #: Retry a POST whose response never came (the server may have run it;
    #: llmpool's calls carry an ``Idempotency-Key`` so a retry is safe to dedupe).
    retry_read_timeout: bool = attrs.field(default=True, validator=boolean)
    #: Retry when the connection could not be opened or broke before an answer.
    retry_connect_errors: bool = attrs.field(default=True, validator=boolean)


# --------------------------------------------------------------------------- decisions


def should_retry(policy: RetryPolicy, error: BaseException, attempts_made: int) -> bool:
    """Whether the call that failed with *error* after *attempts_made* attempts
    (the failed one included) may be tried again.

    Status errors follow ``policy.retry_statuses`` alone, and never when the
    server asked for a wait longer than ``max_retry_after``. Transport errors
    follow the policy's switches and the error's own ``retryable`` flag (the
    transport clears it when a retry would be unsafe). Stream errors are
    retried only when nothing reached the caller (``delivered`` is False) and
    the error is transient. Everything else (configuration, invalid
    responses, TLS, a closed pool, the deadline, plugins) is final.
    """
    if attempts_made >= policy.max_attempts:
        return False
    if isinstance(error, APIStatusError):
        if error.status_code not in policy.retry_statuses:
            return False
        retry_after = getattr(error, "retry_after", None)
        return retry_after is None or retry_after <= policy.max_retry_after
    if isinstance(error, (ConnectError, ConnectTimeout, ProtocolError)):
        return policy.retry_connect_errors and error.retryable
    if isinstance(error, ReadTimeout):
        return policy.retry_read_timeout and error.retryable
    if isinstance(error, PoolTimeout):
        return error.retryable
    if isinstance(error, (StreamError, StreamInterrupted, IncompleteStream)):
        return not getattr(error, "delivered", False) and bool(error.retryable)
    return False


def next_delay(
    policy: RetryPolicy,
    attempts_made: int,
    error: BaseException | None = None,
    *,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before the next attempt, after *attempts_made* attempts.

    The server's ``retry_after`` (on *error*) wins when present;
    :func:`should_retry` has already refused one above ``max_retry_after``,
    so it is never silently shortened. Otherwise a backoff that grows: with
    ``step = base_delay * 2 ** (attempts_made - 1)``, a uniform draw between
    ``min(max_delay, step / 2)`` and ``min(max_delay, step)``. Each range
    starts where the previous one ended, so a wait is never shorter than the
    one before it, while the draw still spreads the retries of many threads;
    once ``step / 2`` reaches ``max_delay`` the wait is ``max_delay`` itself.
    """
    retry_after = getattr(error, "retry_after", None) if error is not None else None
    if retry_after is not None:
        return max(0.0, float(retry_after))
    exponent = min(max(attempts_made - 1, 0), _MAX_EXPONENT)
    step = policy.base_delay * 2.0**exponent
    ceiling = min(policy.max_delay, step)
    floor = min(policy.max_delay, step / 2.0)
    return min(ceiling, max(floor, floor + rand() * (ceiling - floor)))


# --------------------------------------------------------------------------- Retry-After

_SECONDS = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")


def get_header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header *name* (given in lower case), whatever the case of the keys.

    Case-insensitive mappings (urllib3's ``HTTPHeaderDict``) answer the first
    lookup; plain dicts are scanned, which is cheap for a response's headers.
    """
    value = headers.get(name)
    if value is not None:
        return value
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _number(text: str) -> float | None:
    text = text.strip()
    if not _SECONDS.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _http_date(text: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp() - now


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asks the client to wait, or None when it did not say.

    Reads ``retry-after-ms`` (milliseconds, OpenAI) first, then ``Retry-After``
    as seconds, then ``Retry-After`` as an HTTP date relative to *now* (epoch
    seconds; default ``time.time()``). Header names may be in any case. A
    time in the past gives 0; an unreadable value is ignored.
    """
    millis = get_header(headers, "retry-after-ms")
    if millis is not None:
        value = _number(millis)
        if value is not None:
            return max(0.0, value / 1000.0)
    text = get_header(headers, "retry-after")
    if text is None:
        return None
    seconds = _number(text)
    if seconds is None:
        seconds = _http_date(text, time.time() if now is None else now)
    return None if seconds is None else max(0.0, seconds)


# --------------------------------------------------------------------------- deadline


def _check_deadline(seconds: float | None) -> None:
    if seconds is not None and (
        not isinstance(seconds, (int, float))
        or isinstance(seconds, bool)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise ConfigError(
            f"deadline must be a number >= 0 or None, got {seconds!r}",
            key="deadline",
            value=seconds,
        )


@attrs.frozen
class Deadline:
    """A call's total time budget, fixed when the call starts. Immutable and
    safe to share; every answer reads the injected monotonic clock.

    ``Deadline.after(None)`` is the absence of a deadline: it never expires,
    allows every delay and leaves timeouts alone.
    """

    #: The budget in seconds (None: unbounded).
    seconds: float | None
    #: The clock reading at which the budget is spent (None: never).
    expires_at: float | None
    clock: Callable[[], float] = attrs.field(default=time.monotonic, repr=False, eq=False)

    @classmethod
    def after(cls, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> Deadline:
        """A deadline *seconds* from now on *clock* (None: no deadline)."""
        if seconds is None and clock is time.monotonic:
            return _UNBOUNDED  # immutable: one for every call without a deadline
        _check_deadline(seconds)
        expires_at = None if seconds is None else clock() + seconds
        return cls(seconds, expires_at, clock)

    def remaining(self) -> float | None:
        """Seconds left (never negative), or None without a deadline."""
        if self.expires_at is None:
            return None
        return max(0.0, self.expires_at - self.clock())

    def expired(self) -> bool:
        """Whether the budget is spent."""
        left = self.remaining()
        return left is not None and left <= 0.0

    @overload
    def clamp(self, timeout: float) -> float: ...
    @overload
    def clamp(self, timeout: None) -> float | None: ...
    def clamp(self, timeout: float | None) -> float | None:
        """A per-attempt *timeout* shortened to what is left of the budget.

        May return 0.0 once the budget is spent: check :meth:`expired` first.
        """
        left = self.remaining()
        if left is None:
            return timeout
        return left if timeout is None else min(timeout, left)

    def allows(self, delay: float) -> bool:
        """Whether sleeping *delay* seconds still leaves time for another attempt."""
        left = self.remaining()
        return left is None or delay < left

    def exceeded(
        self, *, attempts: int, last_error: BaseException | None = None
    ) -> DeadlineExceeded:
        """The error to raise when the budget cannot cover another attempt."""
        cause = f": last error {type(last_error).__name__}: {last_error}" if last_error else ""
        return DeadlineExceeded(
            f"deadline of {self.seconds}s exceeded after {attempts} attempt(s){cause}",
            deadline=self.seconds,
            attempts=attempts,
            last_error=last_error,
        )


#: The deadline of every call without one (see :meth:`Deadline.after`).
_UNBOUNDED = Deadline(None, None)
