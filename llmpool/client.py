"""Client: the request path that ties the pool, providers, plugins and memory together.

A call travels ``chat -> _call -> Attempts.run -> _send_once -> transport``
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
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import attrs

from llmpool.attempts import Attempts
from llmpool.config import MemoryConfig, PoolConfig
from llmpool.exceptions import (
    ConfigError,
    DeadlineExceeded,
    LLMPoolError,
    ResponseTooLarge,
)
from llmpool.forking import renew_lock, reset_after_fork
from llmpool.memory.state import MemoryState
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
from llmpool.pool.interfaces import HTTPResponse, Transport
from llmpool.pool.redirects import RedirectingTransport
from llmpool.providers import Provider, load_provider
from llmpool.providers.base import checked_headers, merge_headers
from llmpool.redaction import check_headers, redact_url
from llmpool.retry import Deadline, RetryPolicy
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


class Client:
    """A client for an OpenAI-compatible or Anthropic API.

    Thread-safe: build **one** per process and share it between all threads
    (a client per request would open a connection, and a TLS context, per
    request). Calls from many threads go through one
    :class:`~llmpool.ConnectionPool`; a :class:`~llmpool.streaming.Stream` it
    returns is confined to the thread that made it.

    *pool* is a :class:`~llmpool.ConnectionPool`, or any other
    :class:`~llmpool.pool.interfaces.Transport` (your own pool, a recording
    transport in tests; shared: the client does not close it), a
    :class:`~llmpool.PoolConfig`, or None (the client builds and owns a
    ConnectionPool). *memory* is a :class:`~llmpool.MemoryConfig` (the client starts
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
        pool: Transport | PoolConfig | None = None,
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
        self._transport: Transport = self._pool
        if transport == "requests":
            if not isinstance(self._pool, ConnectionPool):
                raise ConfigError(
                    "transport='requests' needs a llmpool ConnectionPool as pool",
                    key="transport",
                )
            from llmpool.pool.adapter import RequestsTransport

            self._transport = RequestsTransport(self._pool)
        self.transport = transport
        self._redirecting = RedirectingTransport(
            self._transport, secret_headers=self._provider.secret_headers
        )
        self._plugins, self._owns_plugins = _make_plugins(
            plugins, plugin_settings, plugin_dirs, strict=plugins_strict
        )
        self._memory, self._owns_memory = _make_memory(memory)
        if self._memory is not None:
            self._wire_memory(self._memory)
        reset_after_fork(self, renew_lock)  # a parent thread may have held it

    # -- construction helpers ----------------------------------------------------------

    @classmethod
    def from_config(cls, source: str | Mapping[str, Any] | ClientConfig | None = None) -> Client:
        """Build a client from a YAML file, a dict or a :class:`~llmpool.ClientConfig`
        (see :func:`llmpool.load_config`; environment variables apply)."""
        from llmpool.config_loading import ClientConfig, load_config

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
        reset_after_fork(clone, renew_lock)
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
            return {"in_use": stats.get("in_use", 0), "idle": stats.get("idle", 0)}

        memory.register_gauge("pool", pool_gauge)
        memory.on_pressure(self._on_memory_pressure)

    def _on_memory_pressure(self, level: Any, report: Any) -> None:
        """Memory pressure: from the shed level up, close idle connections; tell plugins."""
        if level >= MemoryState.SHED:
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
    def pool(self) -> Transport:
        """The connection pool (or transport) this client sends through."""
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

    def _status_error(self, response: HTTPResponse) -> LLMPoolError:
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
    ) -> HTTPResponse:
        """Send *request* and return the response with its headers read. Every
        read of the exchange ends by *deadline* (a monotonic instant); with
        ``follow_redirects`` the redirecting transport follows them."""
        transport = self._redirecting if self._options.follow_redirects else self._transport
        response = transport.request(
            request.method,
            self._url(request.path),
            body=request.body,
            headers=request.headers,
            timeout=timeout,
            stream=True,
            pool_timeout=timeout,
            deadline=deadline,
        )
        ctx.connection_reused = response.connection_reused
        ctx.status_code = response.status
        return response

    def _open_stream(self, ctx: CallContext, request: Request, attempts: Attempts) -> Stream:
        """Open a stream through the retry loop, then hand the open response
        to a Stream (which may come back through ``attempts.reopen``)."""
        deadline = attempts.deadline.expires_at

        def open_attempt(timeout: float | None) -> HTTPResponse:
            response = self._exchange(ctx, request, timeout, deadline)
            if not 200 <= response.status < 300:
                raise self._status_error(response)
            return response

        response = attempts.run(open_attempt)
        return Stream(
            ctx=ctx,
            request=request,
            provider=self._provider,
            response=response,
            reopen=functools.partial(attempts.reopen, attempt=open_attempt),
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

    def _count_retry(self) -> None:
        self._count("retries")

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1


# --------------------------------------------------------------------------- helpers


def _make_pool(pool: Any) -> tuple[Transport, bool]:
    """``(transport, owned)``: a PoolConfig or None builds an owned
    ConnectionPool; any Transport is used as it is, shared."""
    if pool is None or isinstance(pool, PoolConfig):
        return ConnectionPool(pool), True
    if isinstance(pool, Transport):
        return pool, False
    raise ConfigError(
        "pool must be a ConnectionPool (or another Transport), a PoolConfig or None, "
        f"got {type(pool).__name__}",
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
