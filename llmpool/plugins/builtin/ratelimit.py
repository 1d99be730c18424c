"""The ``ratelimit`` plugin: requests and tokens per minute, per (scope, model).

A sliding window: at most ``requests_per_minute`` calls and
``tokens_per_minute`` tokens in any ``window`` seconds (60 by default;
budgets scale with it). A call reserves its tokens before it is sent (its
``max_tokens``, or ``default_max_tokens``, plus its prompt estimated at one
token per four bytes of the body) and the reservation is replaced by the
usage the server reports when it ends. Admission is atomic in the client's
state backend: in this process by default, in Redis when the client's state
is shared, where every process and host spends one budget (one round trip
per admission, timed by Redis's clock).

A call that finds no room waits (outside any lock) until the window has
room, up to ``timeout`` seconds and never past the call's deadline, then
fails with :class:`~llmpool.exceptions.RateLimitExceeded`. When the backend
fails, ``on_backend_error: allow`` lets the call go (counted), ``deny``
fails it with :class:`~llmpool.exceptions.StateBackendError`. The plugin is
critical, so these exceptions reach the caller.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from llmpool.exceptions import ConfigError, RateLimitExceeded, StateBackendError
from llmpool.forking import renew_lock, reset_after_fork
from llmpool.models import CallContext, Request
from llmpool.plugins.base import LLMPlugin, PluginContext
from llmpool.plugins.builtin._settings import read_settings
from llmpool.state import (
    CredentialScopes,
    MemoryBackend,
    RateLimits,
    StateBackend,
    credential_scope,
)
from llmpool.validators import (
    non_negative_int,
    non_negative_number,
    optional,
    optional_str,
    positive_int,
    positive_number,
)

__all__ = ["RateLimitPlugin", "RateLimitSettings"]

#: Scope digests kept (the table starts afresh when it is full).
MAX_SCOPE_DIGESTS = 256


@attrs.frozen(kw_only=True)
class RateLimitSettings:
    """The ``ratelimit`` plugin's settings. Immutable. None disables a budget."""

    requests_per_minute: float | None = attrs.field(
        default=None, validator=optional(positive_number)
    )
    tokens_per_minute: float | None = attrs.field(default=None, validator=optional(positive_number))
    #: Longest wait for capacity, in seconds (0: fail at once).
    timeout: float = attrs.field(default=30.0, validator=non_negative_number)
    #: The sliding window, in seconds; the budgets are per minute, scaled to it.
    window: float = attrs.field(default=60.0, validator=positive_number)
    #: The budget's name, shared by every process that names it (default: a
    #: digest of the base URL and the API key, so one key spends one budget).
    scope: str | None = attrs.field(default=None, validator=optional_str)
    #: Completion tokens reserved for a call that sets no max_tokens.
    default_max_tokens: int = attrs.field(default=0, validator=non_negative_int)
    #: Windows kept in process (least recently used dropped beyond it).
    max_models: int = attrs.field(default=256, validator=positive_int)

    def __attrs_post_init__(self) -> None:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ConfigError(
                "set requests_per_minute, tokens_per_minute or both",
                key="requests_per_minute",
                value=None,
            )

    def limits(self) -> RateLimits:
        """The budgets per window."""
        scale = self.window / 60.0
        rpm, tpm = self.requests_per_minute, self.tokens_per_minute
        return RateLimits(
            requests=None if rpm is None else max(1, int(rpm * scale)),
            tokens=None if tpm is None else max(1, int(tpm * scale)),
            window=self.window,
        )


def reserve(request: Request, default_max_tokens: int) -> int:
    """Tokens a call reserves: its completion cap plus its prompt estimated
    at one token per four bytes of JSON body (an overestimate for text)."""
    payload = request.payload or {}
    cap = payload.get("max_tokens", payload.get("max_completion_tokens"))
    completion = cap if isinstance(cap, int) and cap > 0 else default_max_tokens
    return completion + len(request.body or b"") // 4


class RateLimitPlugin(LLMPlugin):
    """Waits for room in the window before each call; fails with
    RateLimitExceeded after ``timeout``.

    Thread-safe: the backend admits atomically; one lock guards the counters
    and is never held while waiting. *clock* and *sleep* are injectable for
    tests (they time the in-process windows and the waits).
    """

    name = "ratelimit"
    version = "2.0"
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
        self._limits = self.settings.limits()
        self._backend: StateBackend = MemoryBackend(clock=clock)
        # Guards the counters below.
        self._lock = threading.Lock()
        reset_after_fork(self, renew_lock)
        self._counts = dict.fromkeys(
            ("admitted", "waits", "rejected", "backend_errors", "allowed_on_error", "denied"), 0
        )
        self._waited = 0.0
        # credential scopes, computed once per base URL and credentials
        self._scopes = CredentialScopes(MAX_SCOPE_DIGESTS)

    def setup(self, context: PluginContext) -> None:
        self.settings = read_settings(RateLimitSettings, self.name, context.settings)
        self._limits = self.settings.limits()
        state = context.state
        if state is not None and state.shared:
            self._backend = state
        else:
            self._backend = MemoryBackend(max_scopes=self.settings.max_models, clock=self._clock)

    def _scope(self, ctx: CallContext, request: Request) -> str:
        """The window's name: the scope (settings, else a digest of the base URL
        and credentials) and the model."""
        if self.settings.scope:
            return f"{self.settings.scope}/{ctx.model or ''}"
        return f"{self._scopes(request.headers, ctx.base_url)}/{ctx.model or ''}"

    def before_request(self, ctx: CallContext, request: Request) -> None:
        scope = self._scope(ctx, request)
        tokens = reserve(request, self.settings.default_max_tokens)
        started = self._clock()
        limit = self.settings.timeout
        if ctx.deadline is not None:
            limit = min(limit, max(0.0, ctx.deadline - time.monotonic()))
        slept = False
        while True:
            try:
                answer = self._backend.admit(scope, self._limits, tokens=tokens, timeout=_left(ctx))
            except StateBackendError as exc:
                self._on_backend_error(exc)
                return
            waited = self._clock() - started
            if answer.admitted:
                ctx.state[self.name] = (scope, answer.ticket)
                self._add(admitted=1, waits=int(slept), waited=waited if slept else 0.0)
                return
            if waited + answer.wait > limit:
                self._add(rejected=1)
                raise RateLimitExceeded(
                    f"no rate-limit capacity for model {ctx.model or ''!r} within "
                    f"{limit:g} s (next in {answer.wait:.2f} s)",
                    model=ctx.model or "",
                    waited=waited,
                )
            # a little jitter: the waiters of all processes do not all wake at once
            self._sleep(answer.wait + random.uniform(0.0, min(0.01, answer.wait * 0.05)))
            slept = True

    def _on_backend_error(self, exc: StateBackendError) -> None:
        if self._backend.on_backend_error == "deny":
            self._add(backend_errors=1, denied=1)
            raise exc
        self._add(backend_errors=1, allowed_on_error=1)

    def after_response(self, ctx: CallContext, request: Request, response: Any) -> None:
        if response is not None and not request.stream:
            self._reconcile(ctx, getattr(response, "usage", None))

    def on_stream_end(self, ctx: CallContext, stream: Any) -> None:
        self._reconcile(ctx, getattr(stream, "usage", None))

    def _reconcile(self, ctx: CallContext, usage: Any) -> None:
        """Replace the call's reservation by its usage (kept when none was reported).
        A failure is counted, never raised: the answer is already there."""
        held = ctx.state.get(self.name)
        tokens = getattr(usage, "total_tokens", 0) or 0
        if not held or held[1] is None or tokens <= 0 or self._limits.tokens is None:
            return
        scope, ticket = held
        try:
            self._backend.reconcile(scope, self._limits, ticket, tokens=tokens, timeout=_left(ctx))
        except StateBackendError:
            self._add(backend_errors=1)

    def _add(self, waited: float = 0.0, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                self._counts[name] += n
            self._waited += waited

    def usage(self, model: str | None = None, scope: str | None = None) -> dict[str, float]:
        """What the in-process window of *model* holds: ``{"requests", "tokens"}``
        (*scope*: the settings' scope, else that of a call without credentials)."""
        backend = self._backend
        if not isinstance(backend, MemoryBackend):
            raise TypeError("usage() reads the in-process window only")
        scope = scope or self.settings.scope or credential_scope({}, None)
        return backend.usage(f"{scope}/{model or ''}", self.settings.window)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self._counts)
            waited = self._waited
        return {"backend": self._backend.name, **counts, "waited_seconds": round(waited, 6)}


def _left(ctx: CallContext) -> float | None:
    """Seconds left of the call's deadline (None: no deadline)."""
    return None if ctx.deadline is None else max(0.0, ctx.deadline - time.monotonic())
