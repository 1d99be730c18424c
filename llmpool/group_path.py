"""The request path over an endpoint group: routing, failover and fallbacks.

A call with ``Client(endpoints=[...])`` travels the plain path
(:mod:`llmpool.request_path`) up to the retry loop; there each attempt
first asks the health book for an endpoint (:meth:`GroupPath._pick`), is
shaped for that endpoint's provider (:class:`Shaper`), goes out through the
endpoint's route, and tells the book how it ended. A failure that names the
endpoint (:func:`~llmpool.endpoints.outcomes.fails_over`) sends the next
attempt to another endpoint at once, with the same Idempotency-Key and
within the same deadline; when the model's endpoints are exhausted, its
``fallbacks`` follow, and after a "prompt too long" 400 its
``context_window_fallbacks``.

Thread-safe as the client is: per-call state lives in locals.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
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

__all__ = ["GroupPath", "Shaper"]

log = logging.getLogger(__name__)


class Shaper:
    """The call's request as each endpoint's provider shapes it.

    The request the plugins saw (built by the client's first provider, then
    given the call's headers) goes as it is to that provider's endpoints. An
    endpoint whose provider is of the same type gets the same body (encoded
    once) with its own provider's headers (its own API key); another
    provider type, or a fallback model, builds the call anew. Every endpoint
    gets the call's own headers: ``extra_headers``, the Idempotency-Key and
    headers a plugin added. Confined to the call's thread.
    """

    def __init__(
        self,
        *,
        primary: Provider,
        request: Request,
        parse: Callable[..., Any],
        built: Request,
        build: Rebuild,
        model: str | None,
        own: Callable[[Provider, Request], Mapping[str, str]],
    ) -> None:
        self.own = own
        self.primary = primary
        self.model = model
        self.request = request
        self.parse = parse
        self.built = built
        self.build = build
        self._extra: dict[str, str] | None = None
        self._made: dict[tuple[int, str | None], tuple[Request, Callable[..., Any]]] = {}

    @property
    def extra(self) -> dict[str, str]:
        """The call's own headers: those the request has beyond what its
        provider gave it (computed when another endpoint first needs them)."""
        if self._extra is None:
            built = self.built.headers
            self._extra = {k: v for k, v in self.request.headers.items() if built.get(k) != v}
        return self._extra

    def shape(self, provider: Provider, model: str | None) -> tuple[Request, Callable[..., Any]]:
        """The request for *provider* and *model*, and its parse function."""
        if provider is self.primary and model == self.model:  # the common case, kept first
            return self.request, self.parse
        key = (id(provider), model)
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = self._make(provider, model)
        return made

    def _make(self, provider: Provider, model: str | None) -> tuple[Request, Callable[..., Any]]:
        parse = _rebind(self.parse, self.primary, provider)
        request = self.request
        if (
            parse is not None
            and model == self.model
            and type(provider) is type(self.primary)
            and self.built.headers == self.own(self.primary, request)
        ):  # a provider of this type sends exactly its headers(): swap them, keep the body
            headers = dict(self.own(provider, request))
            lower = {name.lower(): name for name in headers}
            for name, value in self.extra.items():
                old = lower.get(name.lower())
                if old is not None and old != name:
                    del headers[old]  # the call's spelling wins, as in merge_headers
                headers[name] = value
            return request.with_headers(headers), parse
        built, parse = self.build(provider, model)
        return built.with_headers(merge_headers(built.headers, self.extra)), parse


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


def _tagged(result: Any, endpoint: str | None) -> Any:
    """*result* marked with the endpoint that answered, when its type has the field.

    The result was just built by the provider's parser and nobody else holds
    it yet, so its (frozen) field is set in place rather than copied."""
    if isinstance(result, (ChatCompletion, Embeddings)):
        object.__setattr__(result, "endpoint", endpoint)
    return result


_NO_PICK = Pick(None)


class _ModelRun:
    """The attempts of one call at one model (the requested one or a
    fallback): where it may go, where it went, its deadline. Confined to the
    call's thread."""

    __slots__ = ("ctx", "deadline", "group", "model", "names", "pick", "shaper", "tried")

    def __init__(
        self,
        ctx: CallContext,
        group: EndpointGroup,
        shaper: Shaper,
        model: str | None,
        deadline: Deadline,
    ) -> None:
        names = group.serving(model)
        if not names:
            raise EndpointsUnavailable(
                f"no endpoint serves model {model!r}", model=model, endpoints={}
            )
        self.ctx = ctx
        self.group = group
        self.shaper = shaper
        self.model = model
        self.deadline = deadline
        self.names = names
        #: The endpoints tried so far, and the last pick.
        self.tried: list[str] = []
        self.pick = _NO_PICK

    def fails_over(self, err: LLMPoolError) -> bool:
        """Whether the next attempt goes to an endpoint not yet tried in this
        call (then it does not wait for a backoff, and the retry policy's
        statuses do not stop it: only its attempts do)."""
        return fails_over(err) and self.group.book.has_healthy(self.names, besides=self.tried)


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
        shaper = Shaper(
            primary=self._provider,
            request=request,
            parse=parse,
            built=built,
            build=build,
            model=ctx.model,
            own=group.own_headers,
        )
        models = group.chain(ctx.model)
        index = 0
        while True:
            model = models[index]
            try:
                run = _ModelRun(ctx, group, shaper, model, attempts.deadline)
                attempts.failover = run.fails_over
                if request.stream:
                    return self._group_stream(run, attempts)
                return attempts.run(functools.partial(self._group_attempt, run))
            except LLMPoolError as err:
                if isinstance(err, DeadlineExceeded):
                    raise
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
                attempts = attempts.fresh()

    def _pick(self, run: _ModelRun, names: tuple[str, ...]) -> Route:
        """The route of the endpoint for the next attempt among *names*, one
        not tried in this call when one can take it (counted in flight; the
        pick is kept in *run*); waits for a cooling endpoint when that fits
        the deadline, else raises EndpointsUnavailable."""
        group, tried, deadline = run.group, run.tried, run.deadline
        book = group.book
        while True:
            if group.shared is not None:
                group.shared.sync(deadline.remaining())
            pick = None
            if tried:  # prefer an endpoint this call has not tried yet
                fresh = [n for n in names if n not in tried]
                if fresh:
                    pick = book.pick(fresh)
            if pick is None or pick.name is None:
                pick = book.pick(names)
            name = pick.name
            if name is not None:
                tried.append(name)
                run.pick = pick
                route = group.routes[name]
                ctx = run.ctx
                ctx.endpoint = name
                ctx.base_url = route.base_url
                ctx.provider = route.provider.name
                ctx.model = run.model
                return route
            if not book.config.wait_for_recovery or not deadline.allows(pick.wait):
                errors = book.last_errors(names)
                listed = "; ".join(f"{n}: {e or 'no error yet'}" for n, e in errors.items())
                raise EndpointsUnavailable(
                    f"every endpoint serving {run.model!r} is cooling down ({listed})",
                    model=run.model,
                    endpoints=errors,
                )
            log.debug("call %d: every endpoint cooling; waiting %.3fs", run.ctx.call_id, pick.wait)
            self._sleep(pick.wait)

    def _group_attempt(self, run: _ModelRun, timeout: float | None) -> tuple[Any, int]:
        """One attempt of a JSON call at the endpoint the book picks."""
        route = self._pick(run, run.names)
        probe = run.pick.probe
        name = route.name or ""
        book = run.group.book
        started = time.monotonic()
        try:
            request, parse = run.shaper.shape(route.provider, run.model)
            result, received = self._send_once(
                run.ctx, route, request, parse, timeout, deadline=run.deadline.expires_at
            )
        except LLMPoolError as err:
            book.record(name, outcome_of(err), probe=probe)
            raise
        except BaseException:
            book.release(name, probe=probe)  # not the endpoint's doing
            raise
        headers_at = run.ctx.headers_at or started  # set by the exchange just made
        book.record_ok(name, headers_at - started, headers_at, probe=probe)
        return _tagged(result, name), received

    def _group_stream(self, run: _ModelRun, attempts: Attempts) -> Stream:
        """Open a stream at a picked endpoint; before any chunk, a failure
        reopens it at another endpoint of the same provider kind."""
        group = run.group
        lease = _Lease(group, self._stream_done)
        expires_at = run.deadline.expires_at

        def open_attempt(timeout: float | None) -> HTTPResponse:
            names = run.names
            if lease.kind is not None:  # a reopen keeps the parser's provider kind
                names = tuple(n for n in names if group.routes[n].provider.name == lease.kind)
            route = self._pick(run, names)
            probe = run.pick.probe
            started = time.monotonic()
            try:
                request, _ = run.shaper.shape(route.provider, run.model)
                response = self._open_response(run.ctx, route, request, timeout, expires_at)
            except LLMPoolError as err:
                group.book.record(route.name or "", outcome_of(err), probe=probe)
                raise
            except BaseException:
                group.book.release(route.name or "", probe=probe)
                raise
            lease.name, lease.probe = route.name, probe
            lease.latency = (run.ctx.headers_at or started) - started
            lease.kind = route.provider.name
            return response

        response = attempts.run(open_attempt)

        def reopen(err: LLMPoolError) -> HTTPResponse:
            lease.give_back(err)
            return attempts.reopen(err, attempt=open_attempt)

        route = group.routes[lease.name or ""]
        request, _ = run.shaper.shape(route.provider, run.model)
        return Stream(
            ctx=run.ctx,
            request=request,
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
