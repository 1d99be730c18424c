"""The one retry loop of a call, for JSON calls and streams alike.

:class:`Attempts` runs an attempt until it succeeds or the policy gives up,
bounded by the policy's ``max_attempts`` AND the call's deadline: it shortens
each attempt's timeout to what the deadline leaves, asks the policy
(:func:`llmpool.retry.should_retry`, :func:`llmpool.retry.next_delay`)
whether and how long to wait, tells plugins (``on_attempt``, ``on_retry``),
and sleeps. A stream that fails before it delivered anything comes back here
through :meth:`Attempts.reopen`; nothing else retries a call.

The re-send of a request whose *reused* keep-alive connection turned out dead
before any response byte is not a retry of the call: it is the transport's
own, connection-level concern (:mod:`llmpool.pool.transport`), invisible here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from llmpool.exceptions import (
    APIStatusError,
    DeadlineExceeded,
    LLMPoolError,
    TLSError,
    TransportError,
)
from llmpool.models import CallContext
from llmpool.retry import Deadline, RetryPolicy, next_delay, should_retry

__all__ = ["Attempts"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Failover(Protocol):
    """What an endpoint group gives the loop (its per-call state)."""

    def fails_over(self, err: LLMPoolError) -> bool:
        """Whether the next attempt after *err* goes to another endpoint."""
        ...


class Attempts:
    """The attempts of one call: how many were made, the waits, the deadline.

    Confined to the calling thread (and, for a stream, to the thread reading
    it). *count_retry* is called once per retry (the client's counter);
    *sleep* is injectable so tests never sleep.
    """

    __slots__ = (
        "count_retry",
        "ctx",
        "deadline",
        "failover",
        "made",
        "plugins",
        "policy",
        "sleep",
        "timeout",
    )

    def __init__(
        self,
        *,
        ctx: CallContext,
        deadline: Deadline,
        timeout: float | None,
        policy: RetryPolicy,
        plugins: Any,
        sleep: Callable[[float], None],
        count_retry: Callable[[], None],
    ) -> None:
        self.ctx = ctx
        self.deadline = deadline
        self.timeout = timeout
        self.policy = policy
        self.plugins = plugins
        self.sleep = sleep
        self.count_retry = count_retry
        self.made = 0
        #: With an endpoint group: what says whether the next attempt goes to
        #: another endpoint after an error (then it does not wait for a backoff).
        self.failover: Failover | None = None

    def fresh(self) -> Attempts:
        """New attempts for the same call (a fallback model): the same
        deadline, policy and timeout, none made yet."""
        return Attempts(
            ctx=self.ctx,
            deadline=self.deadline,
            timeout=self.timeout,
            policy=self.policy,
            plugins=self.plugins,
            sleep=self.sleep,
            count_retry=self.count_retry,
        )

    def run(self, attempt: Callable[[float | None], T]) -> T:
        """Call *attempt(timeout)* until it succeeds or the policy gives up."""
        while True:
            self.made += 1
            ctx = self.ctx
            ctx.attempt = self.made
            plugins = self.plugins
            if plugins is not None and plugins.has("on_attempt"):
                plugins.on_attempt(ctx, self.made)
            try:
                return attempt(self.attempt_timeout())
            except LLMPoolError as err:
                self.wait_or_raise(err)

    def reopen(self, err: LLMPoolError, attempt: Callable[[float | None], T]) -> T:
        """After *err* (a stream that failed before delivering anything): wait
        as the policy says, then run *attempt* again; or raise."""
        self.wait_or_raise(err)
        return self.run(attempt)

    def attempt_timeout(self) -> float | None:
        """This attempt's timeout: the call's, shortened to what the deadline leaves."""
        if self.deadline.expired():
            raise self.deadline.exceeded(attempts=self.made - 1)
        return self.deadline.clamp(self.timeout)

    def check_deadline(self, err: LLMPoolError) -> None:
        """Raise DeadlineExceeded (caused by *err*) when a transport error
        struck after the deadline was spent."""
        if isinstance(err, TransportError) and self.deadline.expired():
            raise self.deadline.exceeded(attempts=self.made, last_error=err) from err

    def _fails_over_anyway(self, err: LLMPoolError) -> bool:
        """An error the policy would not retry at the same endpoint, but
        another endpoint may answer: a status outside ``retry_statuses`` or a
        ``Retry-After`` beyond ``max_retry_after`` (the failover test already
        said it names the endpoint), or a TLS failure. Attempts still count."""
        return self.made < self.policy.max_attempts and isinstance(err, (APIStatusError, TLSError))

    def wait_or_raise(self, err: LLMPoolError) -> None:
        """Sleep before the next attempt, or raise *err* (or DeadlineExceeded)."""
        if isinstance(err, DeadlineExceeded):
            raise err
        self.check_deadline(err)
        failover = self.failover is not None and self.failover.fails_over(err)
        if not should_retry(self.policy, err, self.made) and not (
            failover and self._fails_over_anyway(err)
        ):
            raise err
        # When another endpoint takes the next attempt there is no backoff.
        delay = 0.0 if failover else next_delay(self.policy, self.made, err)
        if not self.deadline.allows(delay):
            raise self.deadline.exceeded(attempts=self.made, last_error=err) from err
        plugins = self.plugins
        if plugins is not None and plugins.has("on_retry"):
            plugins.on_retry(self.ctx, self.made, err, delay)
        self.ctx.retries += 1
        self.count_retry()
        log.debug(
            "call %d: attempt %d failed with %s; retrying in %.3fs",
            self.ctx.call_id,
            self.made,
            type(err).__name__,
            delay,
        )
        if not failover:
            self.sleep(delay)
