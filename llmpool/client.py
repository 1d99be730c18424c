"""Client: the request path that ties the pool, providers, plugins and memory together.

A call travels ``chat -> _call -> _Attempts.run -> _send_once -> transport``
(DESIGN.md, "The way a call travels"). No lock is held on that path except
for the few microseconds of a counter update.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urljoin, urlsplit

import attrs

from llmpool.config import MemoryConfig, PoolConfig
from llmpool.exceptions import (
    ConfigError,
    DeadlineExceeded,
    LLMPoolError,
    ResponseTooLarge,
    TransportError,
)
from llmpool.models import CallContext, Embeddings, Request
from llmpool.options import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_STREAM_TEXT,
    OPTION_NAMES,
    ClientOptions,
    check_option,
    parse_base_url,
)
from llmpool.pool.connection_pool import ConnectionPool
from llmpool.pool.transport import Response
from llmpool.providers import Provider, load_provider
from llmpool.providers.base import checked_headers, merge_headers
from llmpool.redaction import check_headers, is_secret_header, redact_url
from llmpool.retry import Deadline, RetryPolicy, next_delay, should_retry
from llmpool.streaming import Stream

if TYPE_CHECKING:
    from llmpool.config import ClientConfig
    from llmpool.memory import MemoryManager
    from llmpool.plugins import PluginManager

__all__ = ["Client"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How much of an error (non-2xx) body is read for its message; the rest is
#: dropped, so a large error body never turns a retryable status into
#: ResponseTooLarge.
ERROR_BODY_BYTES = 64 * 1024

_REDIRECTS = (301, 302, 303, 307, 308)


class _Attempts:
    """The retry loop of one call: attempts, waits and the deadline.

    Confined to the calling thread (and, for a stream, to the thread reading
    it). Bounded by the policy's ``max_attempts`` AND the call's deadline.
    """

    __slots__ = ("client", "ctx", "deadline", "made", "timeout")

    def __init__(
        self, client: Client, ctx: CallContext, deadline: Deadline, timeout: float | None
    ) -> None:
        self.client = client
        self.ctx = ctx
        self.deadline = deadline
        self.timeout = timeout
        self.made = 0

    def run(self, attempt: Callable[[float | None], T]) -> T:
        """Call *attempt(timeout)* until it succeeds or the policy gives up."""
        while True:
            self.made += 1
            ctx = self.ctx
            ctx.attempt = self.made
            plugins = self.client._plugins
            if plugins is not None and plugins.has("on_attempt"):
                plugins.on_attempt(ctx, self.made)
            try:
                return attempt(self.attempt_timeout())
            except LLMPoolError as err:
                self.wait_or_raise(err)

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

    def wait_or_raise(self, err: LLMPoolError) -> None:
        """Sleep before the next attempt, or raise *err* (or DeadlineExceeded)."""
        client = self.client
        if isinstance(err, DeadlineExceeded):
            raise err
        self.check_deadline(err)
        if not should_retry(client._options.retry, err, self.made):
            raise err
        delay = next_delay(client._options.retry, self.made, err)
        if not self.deadline.allows(delay):
            raise self.deadline.exceeded(attempts=self.made, last_error=err) from err
        plugins = client._plugins
        if plugins is not None and plugins.has("on_retry"):
            plugins.on_retry(self.ctx, self.made, err, delay)
        self.ctx.retries += 1
        client._count("retries")
        log.debug(
            "call %d: attempt %d failed with %s; retrying in %.3fs",
            self.ctx.call_id,
            self.made,
            type(err).__name__,
            delay,
        )
        client._sleep(delay)


class Client:
    """A client for an OpenAI-compatible or Anthropic API.

    Thread-safe: build **one** per process and share it between all threads
    (a client per request would open a connection, and a TLS context, per
    request). Calls from many threads go through one
    :class:`~llmpool.ConnectionPool`; a :class:`~llmpool.streaming.Stream` it
    returns is confined to the thread that made it.

    *pool* is a :class:`~llmpool.ConnectionPool` (shared; the client does not
    close it), a :class:`~llmpool.PoolConfig`, or None (the client builds and
    owns one). *memory* is a :class:`~llmpool.MemoryConfig` (the client starts
    and owns a :class:`~llmpool.MemoryManager`) or a manager to share.
    *plugins* is a list of plugin names (loaded through the ``llmpool.plugins``
    entry points, overridden by ``LLMPOOL_PLUGINS``) or plugin objects, or a
    :class:`~llmpool.PluginManager`. *timeout* bounds each attempt's connect
    and reads; *deadline* bounds a whole call, retries and waits included.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        provider: str | Provider | type[Provider] = "openai",
        pool: ConnectionPool | PoolConfig | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
        default_headers: Mapping[str, str] | None = None,
        plugins: PluginManager | Sequence[Any] | None = None,
        memory: MemoryManager | MemoryConfig | None = None,
        transport: str = "urllib3",
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_stream_text: int | None = DEFAULT_MAX_STREAM_TEXT,
        follow_redirects: bool = False,
        plugin_settings: Mapping[str, Mapping[str, Any]] | None = None,
        plugin_dirs: Sequence[str] = (),
        plugins_strict: bool = False,
        provider_options: Mapping[str, Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if transport not in ("urllib3", "requests"):
            raise ConfigError(
                f"transport must be 'urllib3' or 'requests', got {transport!r}",
                key="transport",
                value=transport,
            )
        self.base_url, self._url_prefix, self._url_query = parse_base_url(base_url)
        self._provider = load_provider(
            provider,
            api_key=api_key,
            default_headers=default_headers,
            **dict(provider_options or {}),
        )
        self._options = ClientOptions(
            timeout=timeout,
            deadline=deadline,
            retry=RetryPolicy() if retry is None else retry,
            max_response_bytes=max_response_bytes,
            max_stream_text=max_stream_text,
            follow_redirects=follow_redirects,
        )
        self._sleep = sleep
        # Guards _counters only (microseconds; no I/O under it).
        self._lock = threading.Lock()
        self._counters: dict[str, int] = {"calls": 0, "errors": 0, "retries": 0}
        self._errors: dict[str, int] = {}
        self._closed = False
        self._pool, self._owns_pool = _make_pool(pool)
        self._transport: Any = self._pool
        if transport == "requests":
            from llmpool.pool.adapter import RequestsTransport

            self._transport = RequestsTransport(self._pool)
        self.transport = transport
        self._plugins, self._owns_plugins = _make_plugins(
            plugins, plugin_settings, plugin_dirs, strict=plugins_strict
        )
        self._memory, self._owns_memory = _make_memory(memory)
        if self._memory is not None:
            self._wire_memory(self._memory)
        _FORK_WATCH.add(self)

    # -- construction helpers ----------------------------------------------------------

    @classmethod
    def from_config(cls, source: str | Mapping[str, Any] | ClientConfig | None = None) -> Client:
        """Build a client from a YAML file, a dict or a :class:`~llmpool.ClientConfig`
        (see :func:`llmpool.load_config`; environment variables apply)."""
        from llmpool.config import ClientConfig, load_config

        config = source if isinstance(source, ClientConfig) else load_config(source)
        return cls(**config.client_kwargs())

    def with_options(self, **overrides: Any) -> Client:
        """A client like this one with some options changed, sharing the same
        pool, plugins and memory manager (closing it closes none of them).

        Accepts ``timeout``, ``retry``, ``deadline``, ``max_response_bytes``,
        ``max_stream_text``, ``follow_redirects`` and ``default_headers``.
        """
        allowed = OPTION_NAMES
        unknown = set(overrides) - allowed - {"default_headers"}
        if unknown:
            raise ConfigError(
                f"with_options() does not accept {sorted(unknown)}; allowed: "
                f"{sorted(allowed | {'default_headers'})}",
                key=sorted(unknown)[0],
            )
        clone = copy.copy(self)
        clone._owns_pool = clone._owns_plugins = clone._owns_memory = False
        clone._lock = threading.Lock()
        clone._counters = dict.fromkeys(self._counters, 0)
        clone._errors = {}
        _FORK_WATCH.add(clone)
        changes = {name: overrides[name] for name in allowed & set(overrides)}
        if "retry" in changes and changes["retry"] is None:
            changes["retry"] = RetryPolicy()
        clone._options = attrs.evolve(self._options, **changes)
        if "default_headers" in overrides:
            clone._provider = self._provider.with_headers(overrides["default_headers"])
        return clone

    def _wire_memory(self, memory: MemoryManager) -> None:
        pool = self._pool

        def pool_gauge() -> dict[str, int]:
            stats = pool.get_stats()
            return {"in_use": stats["in_use"], "idle": stats["idle"]}

        memory.register_gauge("pool", pool_gauge)
        memory.on_pressure(self._on_memory_pressure)

    def _on_memory_pressure(self, level: Any, report: Any) -> None:
        """Memory pressure: from the shed level up, close idle connections; tell plugins."""
        if str(getattr(level, "value", level)) in ("shed", "critical"):
            closed = self._pool.close_idle()
            log.info("memory pressure (%s): closed %d idle connections", level, closed)
        if self._plugins is not None and self._plugins.has("on_memory_pressure"):
            self._plugins.on_memory_pressure(level, report)

    # -- public calls ------------------------------------------------------------------

    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        stream: bool = False,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """A chat completion: a :class:`~llmpool.ChatCompletion`, or with
        ``stream=True`` a :class:`~llmpool.streaming.Stream` of
        :class:`~llmpool.ChatChunk` (use it in a ``with`` block)."""
        request = self._provider.build_chat(
            model,
            messages,
            stream=stream,
            temperature=temperature,
            max_tokens=max_tokens,
            stop=stop,
            tools=tools,
            extra_body=extra_body,
        )
        return self._call(
            "chat",
            model,
            request,
            self._provider.parse_chat,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )

    def complete(
        self,
        model: str,
        prompt: str,
        *,
        stream: bool = False,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """A text completion (OpenAI ``/completions``): a ChatCompletion whose
        message holds the text, or a Stream with ``stream=True``."""
        request = self._provider.build_complete(
            model,
            prompt,
            stream=stream,
            temperature=temperature,
            max_tokens=max_tokens,
            stop=stop,
            extra_body=extra_body,
        )
        return self._call(
            "complete",
            model,
            request,
            self._provider.parse_complete,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
            idempotency_key=idempotency_key,
        )

    def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Embeddings:
        """Embeddings for *input* (one vector per string, in order)."""
        request = self._provider.build_embed(model, input)
        inputs = 1 if isinstance(input, str) else len(input)
        result: Embeddings = self._call(
            "embed",
            model,
            request,
            functools.partial(self._provider.parse_embed_checked, inputs=inputs),
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )
        return result

    def models(self, *, timeout: float | None = None) -> tuple[str, ...]:
        """The model names the server offers."""
        request = self._provider.build_models()
        names: tuple[str, ...] = self._call(
            "models", None, request, self._provider.parse_models, timeout=timeout
        )
        return names

    def stats(self) -> dict[str, Any]:
        """``{"client": ..., "pool": ..., "memory": ..., "plugins": ...}`` as plain dicts.

        Thread-safe; never contains the API key.
        """
        with self._lock:
            client: dict[str, Any] = dict(self._counters)
            client["errors_by_type"] = dict(self._errors)
        return {
            "client": client,
            "pool": self._pool.get_stats(),
            "memory": self._memory.stats() if self._memory is not None else {},
            "plugins": self._plugins.stats() if self._plugins is not None else {},
        }

    @property
    def options(self) -> ClientOptions:
        """The options this client's calls use (an immutable value)."""
        return self._options

    @property
    def pool(self) -> ConnectionPool:
        """The connection pool this client sends through."""
        return self._pool

    @property
    def plugins(self) -> PluginManager | None:
        """The plugin manager (None when the client has no plugins)."""
        return self._plugins

    @property
    def memory(self) -> MemoryManager | None:
        """The memory manager (None when the client has none)."""
        return self._memory

    @property
    def provider(self) -> Provider:
        """The provider that shapes requests and parses responses."""
        return self._provider

    def close(self) -> None:
        """Close what the client owns (its pool, memory manager, plugins). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_plugins and self._plugins is not None:
            self._plugins.close()
        if self._owns_memory and self._memory is not None:
            self._memory.close()
        if self._owns_pool:
            self._pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<llmpool.Client provider={self._provider.name!r} "
            f"base_url={redact_url(self.base_url)!r} "
            f"transport={self.transport!r}>"
        )

    # -- the request path --------------------------------------------------------------

    def _call(
        self,
        operation: str,
        model: str | None,
        request: Request,
        parse: Callable[..., Any],
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Run one call: plugins, admission, the retry loop, accounting.

        The deadline starts here: plugin hooks, waits for a connection, reads
        and retries all spend it.
        """
        budget = Deadline.after(
            self._options.deadline if deadline is None else check_option("deadline", deadline)
        )
        if timeout is not None:
            timeout = check_option("timeout", timeout)
        ctx = CallContext(operation=operation, model=model, provider=self._provider.name)
        request = self._prepare(request, extra_headers, idempotency_key)
        plugins = self._plugins
        if plugins is not None and plugins.has("before_request"):
            request, answer = self._before_request(plugins, ctx, request, budget)
            if answer is not None:
                return answer
        if self._memory is not None:
            self._memory.admit(operation)
        attempts = _Attempts(
            self, ctx, budget, timeout if timeout is not None else self._options.timeout
        )
        self._count("calls")
        try:
            if request.stream:
                return self._open_stream(ctx, request, attempts)
            result, received = attempts.run(
                lambda t: self._send_once(ctx, request, parse, t, budget.expires_at)
            )
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
            headers["Idempotency-Key"] = idempotency_key or f"llmpool-{os.urandom(16).hex()}"
        return request.replace(headers=headers)

    def _url(self, path: str) -> str:
        """The URL of a request *path*, keeping the base URL's query string."""
        if not self._url_query:
            return self._url_prefix + path
        return f"{self._url_prefix}{path}{'&' if '?' in path else '?'}{self._url_query}"

    def _send_once(
        self,
        ctx: CallContext,
        request: Request,
        parse: Callable[..., T],
        timeout: float | None,
        deadline: float | None,
    ) -> tuple[T, int]:
        """One attempt of a non-streamed call: send, read, classify, parse."""
        response = self._exchange(ctx, request, timeout, deadline)
        if not 200 <= response.status < 300:
            raise self._status_error(response)
        request_id = self._provider.request_id(response.headers)
        try:
            body = response.read(max_bytes=self._options.max_response_bytes)
        except ResponseTooLarge as err:
            err.request_id = request_id
            raise
        return parse(body, request_id=request_id), len(body)

    def _status_error(self, response: Response) -> LLMPoolError:
        """The typed error for a non-2xx *response*, from at most
        ERROR_BODY_BYTES of its body (the rest is dropped with the connection)."""
        try:
            body = response.read(max_bytes=ERROR_BODY_BYTES)
        except ResponseTooLarge:
            body = b""  # too large to be an error message: the status still counts
        except LLMPoolError as err:
            return err
        return self._provider.parse_error(response.status, response.headers, body)

    def _exchange(
        self, ctx: CallContext, request: Request, timeout: float | None, deadline: float | None
    ) -> Response:
        """Send *request* and return the response with its headers read. Every
        read of the exchange ends by *deadline* (a monotonic instant)."""
        response: Response = self._transport.request(
            request.method,
            self._url(request.path),
            body=request.body,
            headers=request.headers,
            timeout=timeout,
            stream=True,
            pool_timeout=timeout,
            deadline=deadline,
        )
        if self._options.follow_redirects and response.status in _REDIRECTS:
            response = self._follow(request, response, timeout, deadline)
        ctx.connection_reused = response.connection_reused
        ctx.status_code = response.status
        return response

    def _follow(
        self, request: Request, response: Response, timeout: float | None, deadline: float | None
    ) -> Response:
        """Follow up to five redirects. Credentials never leave the origin they
        were meant for: on any change of scheme, host or port every secret
        header (:func:`llmpool.redaction.is_secret_header`: Authorization,
        Cookie, key and token headers, the provider's ``secret_headers``) is
        dropped, and they never go back, even if a
        later redirect returns to the first origin."""
        url = self._url(request.path)
        headers = dict(request.headers)
        origin = _origin(url)
        declared = self._provider.secret_headers
        for _ in range(5):
            location = response.header("location")
            if not location or response.status not in _REDIRECTS:
                return response
            response.drain()
            target = urljoin(url, location)
            if _origin(target) != origin:
                headers = {k: v for k, v in headers.items() if not is_secret_header(k, declared)}
            url = target
            response = self._transport.request(
                request.method,
                url,
                body=request.body,
                headers=headers,
                timeout=timeout,
                stream=True,
                pool_timeout=timeout,
                deadline=deadline,
            )
        return response

    def _open_stream(self, ctx: CallContext, request: Request, attempts: _Attempts) -> Stream:
        """Open a stream (the retry loop covers the status and the first event)."""

        deadline = attempts.deadline.expires_at

        def open_attempt(timeout: float | None) -> Response:
            response = self._exchange(ctx, request, timeout, deadline)
            if not 200 <= response.status < 300:
                raise self._status_error(response)
            return response

        return Stream(
            ctx=ctx,
            request=request,
            provider=self._provider,
            open_response=lambda: attempts.run(open_attempt),
            retry=attempts.wait_or_raise,
            plugins=self._plugins,
            on_done=self._stream_done,
            max_text=self._options.max_stream_text,
            check_deadline=attempts.check_deadline,
        )

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

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1


# --------------------------------------------------------------------------- helpers


def _origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def _make_pool(pool: ConnectionPool | PoolConfig | None) -> tuple[ConnectionPool, bool]:
    if isinstance(pool, ConnectionPool):
        return pool, False
    if pool is None or isinstance(pool, PoolConfig):
        return ConnectionPool(pool), True
    raise ConfigError(
        f"pool must be a ConnectionPool, a PoolConfig or None, got {type(pool).__name__}",
        key="pool",
    )


def _make_plugins(
    plugins: Any,
    settings: Mapping[str, Mapping[str, Any]] | None,
    dirs: Sequence[str],
    *,
    strict: bool = False,
) -> tuple[PluginManager | None, bool]:
    from llmpool.plugins import PluginManager, resolve_plugin_names

    if isinstance(plugins, PluginManager):
        return plugins, False
    objects = [p for p in (plugins or ()) if not isinstance(p, str)]
    names = resolve_plugin_names([p for p in (plugins or ()) if isinstance(p, str)])
    if not names and not objects and not dirs:
        return None, False
    manager = PluginManager(strict=strict)
    if names:
        manager.load_entry_points(names, settings=settings)
    for directory in dirs:
        manager.load_plugins(directory, settings=settings)
    for plugin in objects:
        manager.register_plugin(plugin, (settings or {}).get(getattr(plugin, "name", ""), None))
    return manager, True


def _make_memory(memory: Any) -> tuple[MemoryManager | None, bool]:
    if memory is None:
        return None, False
    from llmpool.memory import MemoryManager

    if isinstance(memory, MemoryManager):
        return memory, False
    if isinstance(memory, MemoryConfig):
        manager = MemoryManager(memory)
        manager.start()
        return manager, True
    raise ConfigError(
        f"memory must be a MemoryConfig or a MemoryManager, got {type(memory).__name__}",
        key="memory",
    )


# --------------------------------------------------------------------------- fork

_FORK_WATCH: weakref.WeakSet[Client] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child gets fresh client locks (a parent thread may have held one);
    the pool, plugins and memory manager renew their own."""
    for client in list(_FORK_WATCH):
        client._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
