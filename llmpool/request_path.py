"""The request path: one call, from the provider's request to its result.

A call travels ``Client.chat -> _call -> Attempts.run -> _send_once ->
_exchange -> Transport.request`` (docs/architecture.rst, "How a call
travels"). :class:`RequestPath` holds those steps, one method each; the
:class:`~llmpool.Client` inherits them and supplies the parts they use (the
provider, the transport, plugins, the memory manager, the options and the
counters). No lock is held on this path except for the few microseconds of a
counter update.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from llmpool.attempts import Attempts
from llmpool.exceptions import DeadlineExceeded, LLMPoolError, ResponseTooLarge
from llmpool.forking import reset_after_fork
from llmpool.models import CallContext, Request
from llmpool.options import ClientOptions, check_option
from llmpool.pool.interfaces import HTTPResponse
from llmpool.providers import Provider
from llmpool.providers.base import checked_headers, merge_headers
from llmpool.redaction import check_headers
from llmpool.retry import Deadline
from llmpool.routes import Rebuild, Route
from llmpool.streaming import Stream

if TYPE_CHECKING:
    from llmpool.group import EndpointGroup
    from llmpool.memory import MemoryManager
    from llmpool.plugins import PluginManager

__all__ = ["ERROR_BODY_BYTES", "RequestPath"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How much of an error (non-2xx) body is read for its message; the rest is
#: dropped, so a large error body never turns a retryable status into
#: ResponseTooLarge.
ERROR_BODY_BYTES = 64 * 1024


class _IdempotencyKeys:
    """``llmpool-`` and 32 hex digits: a random per-process prefix and a
    counter, so a key costs no system call (``os.urandom`` per call released
    the GIL for a ``getrandom``). Unique within a process (the counter) and
    across processes (the prefix, renewed in a forked child). Thread-safe:
    ``next()`` on an itertools counter is atomic under the GIL."""

    def __init__(self) -> None:
        self.renew()
        reset_after_fork(self, "renew")

    def renew(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def next(self) -> str:
        return f"llmpool-{self.prefix}{next(self.counter):016x}"


_KEYS = _IdempotencyKeys()


class RequestPath:
    """The steps of a call, for :class:`~llmpool.Client` (which sets the
    attributes below). Thread-safe as the client is: per-call state lives in
    locals and the call's :class:`~llmpool.CallContext`."""

    _provider: Provider
    _route: Route
    _group: EndpointGroup | None
    #: The attempts over an endpoint group (llmpool.group_path.GroupPath._group_run).
    _group_run: Callable[..., Any]
    _plugins: PluginManager | None
    _memory: MemoryManager | None
    _options: ClientOptions
    base_url: str
    _sleep: Callable[[float], None]
    _lock: threading.Lock
    _counters: dict[str, int]
    _errors: dict[str, int]

    def _call(
        self,
        operation: str,
        model: str | None,
        build: Rebuild,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Run one call: plugins, admission, the retry loop, accounting.

        The deadline starts here: plugin hooks, waits for a connection, reads
        and retries all spend it. *build* shapes the call for a provider and
        model (with an endpoint group, for each endpoint and fallback model:
        :mod:`llmpool.group_path`).
        """
        built, parse = build(self._provider, model)
        budget = Deadline.after(
            self._options.deadline if deadline is None else check_option("deadline", deadline)
        )
        if timeout is not None:
            timeout = check_option("timeout", timeout)
        ctx = CallContext(
            operation=operation, model=model, provider=self._provider.name, base_url=self.base_url
        )
        ctx.deadline = budget.expires_at
        request = self._prepare(built, extra_headers, idempotency_key)
        plugins = self._plugins
        if plugins is not None and plugins.has("before_request"):
            request, answer = self._before_request(plugins, ctx, request, budget)
            if answer is not None:
                return answer
        if self._memory is not None:
            self._memory.admit(operation)
        attempts = Attempts(
            ctx=ctx,
            deadline=budget,
            timeout=self._options.timeout if timeout is None else timeout,
            policy=self._options.retry,
            plugins=plugins,
            sleep=self._sleep,
            count_retry=self._count_retry,
        )
        self._count("calls")
        try:
            if request.stream:
                stream: Stream = self._run(ctx, request, parse, attempts, build=build, built=built)
                return stream
            result, received = self._run(ctx, request, parse, attempts, build=build, built=built)
        except LLMPoolError as err:
            self._failed(ctx, request, err)
            raise
        if plugins is not None and plugins.has("after_response"):
            replaced = plugins.after_response(ctx, request, result)
            if budget.expired():
                self._overran(ctx, request, budget, "after_response", attempts.made)
            if replaced is not None:
                result = replaced
        if self._memory is not None:
            self._memory.account(operation, model, received, len(request.body or b""), ctx.elapsed)
        return result

    def _run(
        self,
        ctx: CallContext,
        request: Request,
        parse: Callable[..., Any],
        attempts: Attempts,
        *,
        build: Rebuild,
        built: Request,
    ) -> Any:
        """The attempts: ``(result, bytes received)``, or an open Stream."""
        if self._group is not None:
            return self._group_run(ctx, request, parse, attempts, build=build, built=built)
        route = self._route
        if request.stream:
            return self._open_stream(ctx, route, request, attempts)
        deadline = attempts.deadline.expires_at
        return attempts.run(
            lambda t: self._send_once(ctx, route, request, parse, t, deadline=deadline)
        )

    def _before_request(
        self, plugins: PluginManager, ctx: CallContext, request: Request, budget: Deadline
    ) -> tuple[Request, Any]:
        """Run ``before_request``: ``(request, None)`` to go on (the request maybe
        changed), or ``(request, answer)`` when a plugin answered (a cache hit)."""
        answer = plugins.before_request(ctx, request)
        if budget.expired():
            self._count("calls")
            self._overran(ctx, request, budget, "before_request", 0)
        if isinstance(answer, Request):
            return answer, None
        if answer is not None:
            self._count("calls")
            if plugins.has("after_response"):
                replaced = plugins.after_response(ctx, request, answer)
                answer = answer if replaced is None else replaced
        return request, answer

    def _overran(
        self, ctx: CallContext, request: Request, budget: Deadline, hook: str, attempts: int
    ) -> NoReturn:
        """A plugin hook spent the rest of the deadline: report it, fail the call."""
        log.warning("plugin hook %s overran the call's deadline of %ss", hook, budget.seconds)
        err = DeadlineExceeded(
            f"deadline of {budget.seconds}s exceeded: plugin hook {hook} overran it",
            deadline=budget.seconds,
            attempts=attempts,
            last_error=None,
        )
        self._failed(ctx, request, err)
        raise err

    def _prepare(
        self, request: Request, extra: Mapping[str, str] | None, idempotency_key: str | None
    ) -> Request:
        """Add the call's extra headers and the Idempotency-Key to the provider's
        request (which already carries the provider's headers)."""
        headers = dict(request.headers)
        if extra:
            headers = merge_headers(headers, checked_headers(extra, key="extra_headers"))
        if request.method == "POST":
            if idempotency_key is not None:
                check_headers({"Idempotency-Key": idempotency_key}, key="idempotency_key")
            headers["Idempotency-Key"] = idempotency_key or _KEYS.next()
        return request.with_headers(headers)

    def _send_once(
        self,
        ctx: CallContext,
        route: Route,
        request: Request,
        parse: Callable[..., T],
        timeout: float | None,
        *,
        deadline: float | None,
    ) -> tuple[T, int]:
        """One attempt of a non-streamed call: send, read, classify, parse."""
        response = self._exchange(ctx, route, request, timeout, deadline)
        if not 200 <= response.status < 300:
            raise self._status_error(route, response)
        request_id = route.provider.request_id(response.headers)
        try:
            body = response.read(max_bytes=self._options.max_response_bytes)
        except ResponseTooLarge as err:
            err.request_id = request_id
            raise
        return parse(body, request_id=request_id), len(body)

    def _status_error(self, route: Route, response: HTTPResponse) -> LLMPoolError:
        """The typed error for a non-2xx *response*, from at most
        ERROR_BODY_BYTES of its body (the rest is dropped with the connection)."""
        try:
            body = response.read(max_bytes=ERROR_BODY_BYTES)
        except ResponseTooLarge:
            body = b""  # too large to be an error message: the status still counts
        except LLMPoolError as err:
            return err
        return route.provider.parse_error(response.status, response.headers, body)

    def _exchange(
        self,
        ctx: CallContext,
        route: Route,
        request: Request,
        timeout: float | None,
        deadline: float | None,
    ) -> HTTPResponse:
        """Send *request* and return the response with its headers read. Every
        read of the exchange ends by *deadline* (a monotonic instant); with
        ``follow_redirects`` the redirecting transport follows them."""
        transport = route.redirecting if self._options.follow_redirects else route.transport
        response = transport.request(
            request.method,
            route.url(request.path),
            body=request.body,
            headers=request.headers,
            timeout=timeout,
            stream=True,
            pool_timeout=timeout,
            deadline=deadline,
        )
        ctx.connection_reused = response.connection_reused
        ctx.status_code = response.status
        ctx.pool_wait = getattr(response, "pool_wait", None)
        ctx.headers_at = time.monotonic()
        return response

    def _open_stream(
        self, ctx: CallContext, route: Route, request: Request, attempts: Attempts
    ) -> Stream:
        """Open a stream through the retry loop, then hand the open response
        to a Stream (which may come back through ``attempts.reopen``)."""
        deadline = attempts.deadline.expires_at

        def open_attempt(timeout: float | None) -> HTTPResponse:
            return self._open_response(ctx, route, request, timeout, deadline)

        response = attempts.run(open_attempt)
        return Stream(
            ctx=ctx,
            request=request,
            provider=route.provider,
            response=response,
            reopen=functools.partial(attempts.reopen, attempt=open_attempt),
            plugins=self._plugins,
            on_done=self._stream_done,
            max_text=self._options.max_stream_text,
            check_deadline=attempts.check_deadline,
        )

    def _open_response(
        self,
        ctx: CallContext,
        route: Route,
        request: Request,
        timeout: float | None,
        deadline: float | None,
    ) -> HTTPResponse:
        """One attempt to open a stream: the response, its status a success."""
        response = self._exchange(ctx, route, request, timeout, deadline)
        if not 200 <= response.status < 300:
            raise self._status_error(route, response)
        return response

    def _stream_done(
        self, ctx: CallContext, request: Request, received: int, error: LLMPoolError | None
    ) -> None:
        """A stream ended: account it, or record its error."""
        if error is not None:
            self._failed(ctx, request, error)
        elif self._memory is not None:
            self._memory.account(
                ctx.operation, ctx.model, received, len(request.body or b""), ctx.elapsed
            )

    def _failed(self, ctx: CallContext, request: Request, err: LLMPoolError) -> None:
        name = type(err).__name__
        with self._lock:
            self._counters["errors"] += 1
            self._errors[name] = self._errors.get(name, 0) + 1
        if self._plugins is not None and self._plugins.has("on_error"):
            self._plugins.on_error(ctx, request, err)

    def _count_retry(self) -> None:
        self._count("retries")

    def _count(self, name: str) -> None:
        lock = self._lock
        lock.acquire()  # not ``with``: every call counts itself
        try:
            self._counters[name] += 1
        finally:
            lock.release()
