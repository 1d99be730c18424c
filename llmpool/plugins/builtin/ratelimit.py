"""The ``ratelimit`` plugin: client-side token buckets per model.

Two buckets per model: requests per minute and tokens per minute. A call
takes one request token in ``before_request``; its tokens are charged when
it ends (``usage.total_tokens``), which may leave the tokens bucket in debt:
the next call of that model then waits until the debt is refilled. Waiting
happens outside any lock, up to ``timeout`` seconds, then the call fails
with :class:`~llmpool.exceptions.RateLimitExceeded`. The plugin is critical,
so that exception reaches the caller.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs

from llmpool.exceptions import ConfigError, RateLimitExceeded
from llmpool.forking import renew_lock, reset_after_fork
from llmpool.models import CallContext, Request
from llmpool.plugins.base import LLMPlugin, PluginContext
from llmpool.plugins.builtin._settings import read_settings
from llmpool.validators import non_negative_number, optional, positive_int, positive_number

__all__ = ["RateLimitPlugin", "RateLimitSettings", "TokenBucket"]


@attrs.frozen(kw_only=True)
class RateLimitSettings:
    """The ``ratelimit`` plugin's settings. Immutable. None disables a bucket."""

    requests_per_minute: float | None = attrs.field(
        default=None, validator=optional(positive_number)
    )
    tokens_per_minute: float | None = attrs.field(default=None, validator=optional(positive_number))
    #: Longest wait for capacity, in seconds (0: fail at once).
    timeout: float = attrs.field(default=30.0, validator=non_negative_number)
    #: Models tracked; the least recently used model's buckets are dropped beyond it.
    max_models: int = attrs.field(default=256, validator=positive_int)

    def __attrs_post_init__(self) -> None:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ConfigError(
                "set requests_per_minute, tokens_per_minute or both",
                key="requests_per_minute",
                value=None,
            )


class TokenBucket:
    """A token bucket holding up to one minute of *per_minute*, refilled continuously.

    Not thread-safe on its own: the plugin's lock guards every bucket.
    """

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: float, now: float) -> None:
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.level = per_minute
        self.updated = now

    def refill(self, now: float) -> None:
        """Add what accrued since the last update (never above capacity)."""
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until *amount* is available (0.0: it is now). Call refill first."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self.rate


class _ModelBuckets:
    __slots__ = ("requests", "tokens")

    def __init__(self, settings: RateLimitSettings, now: float) -> None:
        rpm, tpm = settings.requests_per_minute, settings.tokens_per_minute
        self.requests = TokenBucket(rpm, now) if rpm is not None else None
        self.tokens = TokenBucket(tpm, now) if tpm is not None else None

    def try_take(self, now: float) -> float:
        """Take one request if both buckets allow it; else the seconds to wait."""
        wait = 0.0
        if self.requests is not None:
            self.requests.refill(now)
            wait = self.requests.wait_for(1.0)
        if self.tokens is not None:
            self.tokens.refill(now)
            # a call may start while the token bucket holds anything (no debt)
            wait = max(wait, self.tokens.wait_for(min(1.0, self.tokens.capacity)))
        if wait == 0.0 and self.requests is not None:
            self.requests.level -= 1.0
        return wait


class RateLimitPlugin(LLMPlugin):
    """Waits for capacity before each call; fails with RateLimitExceeded after ``timeout``.

    Thread-safe: one lock guards the buckets and is released while waiting.
    *clock* and *sleep* are injectable for tests.
    """

    name = "ratelimit"
    version = "1.0"
    priority = 20  # after the cache: a cache hit does not spend capacity
    critical = True

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.settings = RateLimitSettings(requests_per_minute=60.0)
        # Guards _buckets and the counters below.
        self._lock = threading.Lock()
        reset_after_fork(self, renew_lock)
        self._buckets: OrderedDict[str, _ModelBuckets] = OrderedDict()
        self._waited = 0.0
        self._waits = 0
        self._rejected = 0

    def setup(self, context: PluginContext) -> None:
        self.settings = read_settings(RateLimitSettings, self.name, context.settings)

    def _bucket(self, model: str, now: float) -> _ModelBuckets:
        """The buckets of *model* (created on first use). Called with the lock held."""
        buckets = self._buckets.get(model)
        if buckets is None:
            buckets = self._buckets[model] = _ModelBuckets(self.settings, now)
            if len(self._buckets) > self.settings.max_models:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(model)
        return buckets

    def before_request(self, ctx: CallContext, request: Request) -> None:
        model = ctx.model or ""
        started = now = self._clock()
        deadline = started + self.settings.timeout
        slept = False
        while True:
            with self._lock:
                wait = self._bucket(model, now).try_take(now)
                if wait == 0.0:
                    if slept:
                        self._waits += 1
                        self._waited += now - started
                    return
                if now + wait > deadline:
                    self._rejected += 1
            if now + wait > deadline:
                raise RateLimitExceeded(
                    f"no rate-limit capacity for model {model!r} within "
                    f"{self.settings.timeout:g} s (next in {wait:.2f} s)",
                    model=model,
                    waited=now - started,
                )
            self._sleep(wait)
            slept = True
            now = self._clock()

    def after_response(self, ctx: CallContext, request: Request, response: Any) -> None:
        if response is not None and not request.stream:
            self._charge(ctx, getattr(response, "usage", None))

    def on_stream_end(self, ctx: CallContext, stream: Any) -> None:
        self._charge(ctx, getattr(stream, "usage", None))

    def _charge(self, ctx: CallContext, usage: Any) -> None:
        tokens = getattr(usage, "total_tokens", 0) or 0
        if tokens <= 0 or ctx.state.get("answered_by") or self.settings.tokens_per_minute is None:
            return
        now = self._clock()
        with self._lock:
            bucket = self._bucket(ctx.model or "", now).tokens
            if bucket is not None:
                bucket.refill(now)
                bucket.level -= tokens

    def levels(self, model: str | None = None) -> dict[str, float | None]:
        """The current levels of *model*'s buckets (None for a disabled bucket)."""
        now = self._clock()
        with self._lock:
            buckets = self._bucket(model or "", now)
            result: dict[str, float | None] = {}
            for kind, bucket in (("requests", buckets.requests), ("tokens", buckets.tokens)):
                if bucket is not None:
                    bucket.refill(now)
                result[kind] = bucket.level if bucket is not None else None
            return result

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "models": len(self._buckets),
                "waits": self._waits,
                "waited_seconds": round(self._waited, 6),
                "rejected": self._rejected,
            }
