"""The request path over an endpoint group: routing, failover and fallbacks.

A call with ``Client(endpoints=[...])`` travels the plain path
(:mod:`llmpool.request_path`) up to the retry loop; there each attempt
first asks the health book for an endpoint (``_GroupCall.route``), is
shaped for that endpoint's provider (``_GroupCall.shape``), goes out through the
endpoint's route, and tells the book how it ended. A failure that names the
endpoint (:func:`~llmpool.endpoints.outcomes.fails_over`) sends the next
attempt to another endpoint at once, with the same Idempotency-Key and
within the same deadline; when the model's endpoints are exhausted, its
``fallbacks`` follow, and after a "prompt too long" 400 its
``context_window_fallbacks``.

Thread-safe as the client is: per-call state lives in a per-call
:class:`_GroupCall`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from llmpool.attempts import Attempts
from llmpool.endpoints.health import Outcome, Pick, StateChange
from llmpool.endpoints.outcomes import fails_over, is_context_window_error, outcome_of
from llmpool.exceptions import DeadlineExceeded, EndpointsUnavailable, LLMPoolError
from llmpool.group import EndpointGroup
from llmpool.models import CallContext, ChatCompletion, Embeddings, Request
from llmpool.pool.interfaces import HTTPResponse
from llmpool.providers import Provider
from llmpool.providers.base import merge_headers
from llmpool.request_path import RequestPath
from llmpool.retry import Deadline
from llmpool.routes import Rebuild, Route
from llmpool.streaming import Stream

__all__ = ["GroupPath"]

log = logging.getLogger(__name__)


class _GroupCall:
    """One call over the group: how the call's request is shaped for each
    endpoint, and its attempts at one model at a time (the requested one,
    then each fallback, :meth:`start`). Confined to the call's thread.

    Shaping: the request the plugins saw (built by the client's first
    provider, then given the call's headers) goes as it is to that
    provider's endpoints. An endpoint whose provider is of the same type
    gets the same body (encoded once) with its own provider's headers (its
    own API key; :class:`~llmpool.group.HeaderSwap`); another provider
    type, or a fallback model, builds the call anew. Every endpoint gets
    the call's own headers: ``extra_headers``, the Idempotency-Key and
    headers a plugin added.
    """

    __slots__ = (
        "build",
        "built",
        "ctx",
        "deadline",
        "group",
        "model",
        "names",
        "parse",
        "path",
        "pick",
        "primary",
        "request",
        "requested",
        "tried",
    )

    def __init__(  # noqa: PLR0917 - positional: a class called with keywords packs a dict per call
        self,
        path: GroupPath,
        ctx: CallContext,
        group: EndpointGroup,
        request: Request,
        parse: Callable[..., Any],
        built: Request,
        build: Rebuild,
        deadline: Deadline,
    ) -> None:
        self.path = path
        self.ctx = ctx
        self.group = group
        self.request = request
        self.parse = parse
        self.built = built
        self.build = build
        self.deadline = deadline
        self.primary = path._provider
        self.requested = self.model = ctx.model
        #: Set by start(): the endpoints serving the model, those tried at it so
        #: far, and the last pick.
        self.names: tuple[str, ...]
        self.tried: list[str]
        self.pick: Pick

    def start(self, model: str | None) -> None:
        """Attempts at *model* from now on (none tried yet)."""
        names = self.group.serving(model)
        if not names:
            raise EndpointsUnavailable(
                f"no endpoint serves model {model!r}", model=model, endpoints={}
            )
        self.model = self.ctx.model = model
        self.names = names
        self.tried = []

    def fails_over(self, err: LLMPoolError) -> bool:
        """Whether the next attempt goes to an endpoint not yet tried at this
        model (then it does not wait for a backoff, and the retry policy's
        statuses do not stop it: only its attempts do)."""
        return fails_over(err) and self.group.book.has_healthy(self.names, besides=self.tried)

    def shape(self, provider: Provider) -> tuple[Request, Callable[..., Any]]:
        """The request for *provider* at the current model, and its parse function."""
        if provider is self.primary and self.model == self.requested:  # the common case
            return self.request, self.parse
        model = self.model
        request = self.request
        if model == self.requested and type(provider) is type(self.primary):
            parse = _rebind(self.parse, self.primary, provider)
            swap = self.group.header_swap(self.primary, provider, request.method, request.stream)
            if parse is not None and self.built.headers == swap.old:
                # a provider of this type sends exactly its headers: swap them, keep the body
                if swap.none:  # the same headers (replicas sharing a key, or keyless)
                    return request, parse
                return request.with_headers(swap.apply(request.headers)), parse
        built = self.built.headers
        extra = {k: v for k, v in request.headers.items() if built.get(k) != v}
        rebuilt, parse = self.build(provider, model)
        return rebuilt.with_headers(merge_headers(rebuilt.headers, extra)), parse

    def route(self, names: tuple[str, ...]) -> Route:
        """The route of the endpoint for the next attempt among *names*
        (counted in flight there; the pick is kept in ``self.pick``)."""
        group, tried = self.group, self.tried
        if tried or group.shared is not None:
            pick = self._wait_for_pick(names)
        else:  # a first attempt, no shared state: ask at once
            pick = group.book.pick(names)
            if pick.name is None:
                pick = self._wait_for_pick(names)
        name = pick.name or ""  # never empty: a pick that names nobody waited above
        tried.append(name)
        self.pick = pick
        route = group.routes[name]
        ctx = self.ctx
        ctx.endpoint = name
        ctx.base_url = route.base_url
        ctx.provider = route.provider.name
        return route

    def _wait_for_pick(self, names: tuple[str, ...]) -> Pick:
        """A pick among *names* after a shared-state sync, one not tried at
        this model when one can take it; waits for a cooling endpoint when
        that fits the deadline, else raises EndpointsUnavailable."""
        group, tried, deadline = self.group, self.tried, self.deadline
        book = group.book
        while True:
            if group.shared is not None:
                group.shared.sync(deadline.remaining())
            pick = None
            if tried:  # prefer an endpoint this call has not tried yet
                fresh = tuple(n for n in names if n not in tried)
                if fresh:
                    pick = book.pick(fresh)
            if pick is None or pick.name is None:
                pick = book.pick(names)
            if pick.name is not None:
                return pick
            if not book.config.wait_for_recovery or not deadline.allows(pick.wait):
                errors = book.last_errors(names)
                listed = "; ".join(f"{n}: {e or 'no error yet'}" for n, e in errors.items())
                raise EndpointsUnavailable(
                    f"every endpoint serving {self.model!r} is cooling down ({listed})",
                    model=self.model,
                    endpoints=errors,
                )
            log.debug("call %d: every endpoint cooling; waiting %.3fs", self.ctx.call_id, pick.wait)
            self.path._sleep(pick.wait)

    def attempt(self, timeout: float | None) -> tuple[Any, int]:
        """One attempt of a JSON call at the endpoint the book picks."""
        route = self.route(self.names)
        pick = self.pick
        probe = pick.probe
        name = pick.name or ""
        book = self.group.book
        ctx = self.ctx
        started = time.monotonic()
        try:
            provider = route.provider
            if provider is self.primary and self.model == self.requested:  # as shape() does
                request, parse = self.request, self.parse
            else:
                request, parse = self.shape(provider)
            result, received = self.path._send_once(
                ctx, route, request, parse, timeout, deadline=self.deadline.expires_at
            )
        except LLMPoolError as err:
            book.record(name, outcome_of(err), probe=probe)
            raise
        except BaseException:
            book.release(name, probe=probe)  # not the endpoint's doing
            raise
        headers_at = ctx.headers_at or started  # set by the exchange just made
        if probe:
            book.record(name, Outcome(ok=True, latency=headers_at - started), probe=True)
        else:
            book.record_ok(name, headers_at - started, headers_at)
        if isinstance(result, _TAGGED):  # built just now by the parser, held by nobody
            object.__setattr__(result, "endpoint", name)  # else: set its frozen field in place
        return result, received


#: The result types that say which endpoint answered.
_TAGGED = (ChatCompletion, Embeddings)


def _rebind(parse: Callable[..., Any], old: Provider, new: Provider) -> Callable[..., Any] | None:
    """*parse* (a bound method of *old*, maybe in a partial) as *new*'s, or None."""
    if isinstance(parse, functools.partial):
        inner = _rebind(parse.func, old, new)
        return None if inner is None else functools.partial(inner, *parse.args, **parse.keywords)
    if getattr(parse, "__self__", None) is old:
        method: Callable[..., Any] = getattr(new, parse.__name__)
        return method
    return None


@attrs.define
class _Lease:
    """The endpoint an open stream holds (its in-flight count), until it ends."""

    group: EndpointGroup
    #: The client's own end of a stream (accounting, errors).
    then: Callable[[CallContext, Request, int, LLMPoolError | None], None]
    name: str | None = None
    probe: bool = False
    latency: float | None = None
    kind: str | None = None
    #: The request as the endpoint's provider shaped it.
    request: Request | None = None

    def give_back(self, error: BaseException | None) -> None:
        """Tell the book how the stream at this endpoint ended."""
        if self.name is not None:
            self.group.book.record(self.name, outcome_of(error, self.latency), probe=self.probe)
            self.name = None

    def stream_done(
        self, ctx: CallContext, request: Request, received: int, error: LLMPoolError | None
    ) -> None:
        """The stream ended: give the endpoint back, then the client's end."""
        self.give_back(error)
        self.then(ctx, request, received, error)


class GroupPath(RequestPath):
    """The group's steps, for :class:`~llmpool.Client` (inherited)."""

    _group: EndpointGroup | None

    def _group_run(
        self,
        ctx: CallContext,
        request: Request,
        parse: Callable[..., Any],
        attempts: Attempts,
        *,
        build: Rebuild,
        built: Request,
    ) -> Any:
        """The call over the group: ``(result, bytes received)``, or a Stream."""
        group = self._group
        assert group is not None
        call = _GroupCall(self, ctx, group, request, parse, built, build, attempts.deadline)
        model = ctx.model
        models: Sequence[str | None] = ()  # the model's fallbacks, looked up after a failure
        index = 0
        while True:
            try:
                call.start(model)
                attempts.failover = call
                if request.stream:
                    return self._group_stream(call, attempts)
                return attempts.run(call.attempt)
            except LLMPoolError as err:
                if isinstance(err, DeadlineExceeded):
                    raise
                if not models:
                    models = group.chain(call.requested)
                if is_context_window_error(err) and group.context_fallbacks.get(model or ""):
                    models = [*models[: index + 1], *group.context_fallbacks[model or ""]]
                elif not fails_over(err):
                    raise
                if index + 1 >= len(models):
                    raise
                index += 1
                log.info(
                    "call %d: model %s failed (%s); falling back to %s",
                    ctx.call_id,
                    model,
                    type(err).__name__,
                    models[index],
                )
                model = models[index]
                attempts = attempts.fresh()

    def _group_stream(self, call: _GroupCall, attempts: Attempts) -> Stream:
        """Open a stream at a picked endpoint; before any chunk, a failure
        reopens it at another endpoint of the same provider kind."""
        group = call.group
        lease = _Lease(group, self._stream_done)
        expires_at = call.deadline.expires_at

        def open_attempt(timeout: float | None) -> HTTPResponse:
            names = call.names
            if lease.kind is not None:  # a reopen keeps the parser's provider kind
                names = tuple(n for n in names if group.routes[n].provider.name == lease.kind)
            route = call.route(names)
            probe = call.pick.probe
            started = time.monotonic()
            try:
                request, _ = call.shape(route.provider)
                response = self._open_response(call.ctx, route, request, timeout, expires_at)
            except LLMPoolError as err:
                group.book.record(route.name or "", outcome_of(err), probe=probe)
                raise
            except BaseException:
                group.book.release(route.name or "", probe=probe)
                raise
            lease.name, lease.probe, lease.request = route.name, probe, request
            lease.latency = (call.ctx.headers_at or started) - started
            lease.kind = route.provider.name
            return response

        response = attempts.run(open_attempt)

        def reopen(err: LLMPoolError) -> HTTPResponse:
            lease.give_back(err)
            return attempts.reopen(err, attempt=open_attempt)

        route = group.routes[lease.name or ""]
        assert lease.request is not None  # set by the attempt that opened it
        return Stream(
            ctx=call.ctx,
            request=lease.request,
            provider=route.provider,
            response=response,
            reopen=reopen,
            plugins=self._plugins,
            on_done=lease.stream_done,
            max_text=self._options.max_stream_text,
            check_deadline=attempts.check_deadline,
        )

    def _check_endpoint(self, name: str) -> Outcome:
        """An active check: ``GET /models`` at *name*, as an outcome."""
        group = self._group
        assert group is not None
        route = group.routes[name]
        request = route.provider.build_models()
        ctx = CallContext(operation="check", provider=route.provider.name, base_url=route.base_url)
        started = time.monotonic()
        try:
            self._send_once(
                ctx,
                route,
                request,
                route.provider.parse_models,
                self._options.timeout,
                deadline=None,
            )
        except LLMPoolError as err:
            return outcome_of(err)
        return Outcome(ok=True, latency=(ctx.headers_at or started) - started)

    def _endpoint_changed(self, change: StateChange) -> None:
        """Report an endpoint's change of state: other processes (a shared
        state backend), the log, then plugins."""
        group = self._group
        if group is not None and group.shared is not None:
            group.shared.publish(change)
        log.warning(
            "endpoint %s: %s -> %s (%s)%s",
            change.endpoint,
            change.old,
            change.new,
            change.reason,
            "" if change.cooldown is None else f"; cooling down {change.cooldown:.1f}s",
        )
        plugins = self._plugins
        if plugins is not None and plugins.has("on_endpoint_state"):
            plugins.on_endpoint_state(change)
