"""Values that travel along a call: the request, the call context and results.

Results (:class:`ChatCompletion`, :class:`Embeddings`, ...) are frozen attrs
values: immutable, safe to share between threads. Fields the models do not
name stay available in ``raw``, the decoded JSON the server sent.

:class:`Request` is frozen too; plugins change it with
:meth:`Request.replace`. :class:`CallContext` belongs to one call and is
confined to the thread making it.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping
from typing import Any

import attrs

from llmpool.exceptions import ConfigError

__all__ = [
    "CallContext",
    "ChatChunk",
    "ChatCompletion",
    "Choice",
    "Embeddings",
    "Message",
    "Request",
    "ToolCall",
    "Usage",
    "encode_json",
]


_new_request = object.__new__
_set = object.__setattr__


def _frozen_headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class Request:
    """One HTTP request a provider built for a call. Immutable.

    ``payload`` is the JSON body as a dict (None for a GET); ``body`` encodes
    it. Treat ``payload`` and ``headers`` as read-only: use :meth:`replace`
    to change a request, which returns a new one.
    """

    method: str
    path: str
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_headers, repr=False)
    payload: Mapping[str, Any] | None = None
    stream: bool = False
    _body: bytes | None = attrs.field(init=False, default=None, eq=False, repr=False)

    @property
    def body(self) -> bytes | None:
        """The payload encoded as compact UTF-8 JSON (None without a payload).

        Encoded once per request value (every attempt of a call sends the same
        bytes); :meth:`replace` keeps the encoding unless the payload changes.
        A payload that strict JSON cannot hold (a datetime, a set, bytes,
        NaN or infinity) raises :class:`~llmpool.exceptions.ConfigError`
        naming the top-level field (see ``encode_json``).
        """
        if self._body is None and self.payload is not None:
            object.__setattr__(self, "_body", encode_json(self.payload))
        return self._body

    def with_headers(self, headers: Mapping[str, str]) -> Request:
        """A copy with *headers* instead, the encoded body kept: the common
        case of :meth:`replace`, without its generic machinery."""
        return Request.owning(
            self.method, self.path, dict(headers), self.payload, self.stream, body=self._body
        )

    @staticmethod
    def owning(
        method: str,
        path: str,
        headers: dict[str, str],
        payload: Mapping[str, Any] | None = None,
        stream: bool = False,
        *,
        body: bytes | None = None,
    ) -> Request:
        """A request that takes *headers* as its own (not copied: the caller
        gives a dict nobody else holds) and *body* as the encoded *payload*.
        The fields are set as attrs' ``__init__`` would, in half its time:
        every call builds one."""
        new = _new_request(Request)
        _set(new, "method", method)
        _set(new, "path", path)
        _set(new, "headers", headers)
        _set(new, "payload", payload)
        _set(new, "stream", stream)
        _set(new, "_body", body)
        return new

    def replace(self, **changes: Any) -> Request:
        """Return a copy with *changes* applied (``attrs.evolve``); the encoded
        body is reused when the payload is unchanged."""
        values = {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "payload": self.payload,
            "stream": self.stream,
            **changes,
        }
        new = Request(**values)  # not attrs.evolve: it reads the fields on every call
        if "payload" not in changes and self._body is not None:
            object.__setattr__(new, "_body", self._body)
        return new


#: What json.dumps (and encoding its text) raises for a value strict JSON cannot hold.
_ENCODE_ERRORS = (TypeError, ValueError, RecursionError)


#: One encoder for every request body (json.dumps with options builds one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def encode_json(payload: Mapping[str, Any], *, key: str | None = None) -> bytes:
    """*payload* as compact UTF-8 JSON, strictly: NaN and infinity are refused
    (they would go out as the invalid literals ``NaN``/``Infinity``), and so
    is anything JSON has no type for (datetime, set, bytes, a lone surrogate).

    A failure raises :class:`~llmpool.exceptions.ConfigError` whose ``key``
    is *key*, or else the first top-level field that fails (``messages``,
    ``temperature``...); the message gives the type or the reason, never
    the content. Pure function; thread-safe.
    """
    try:
        return _dumps(payload)
    except _ENCODE_ERRORS as exc:
        field = key or _failing_field(payload)
        raise ConfigError(f"{field} cannot be sent as JSON: {_reason(exc)}", key=field) from None


def _failing_field(payload: Mapping[str, Any]) -> str:
    for name, value in payload.items():
        try:
            _dumps(value)
        except _ENCODE_ERRORS:
            return str(name)
    return "payload"  # a key of the payload itself is not a string


def _reason(exc: BaseException) -> str:
    """What json said, without the offending value (its messages name types only;
    a UnicodeEncodeError's would quote the text, so it is summarised)."""
    if isinstance(exc, UnicodeEncodeError):
        return "a string holds a lone surrogate (not valid UTF-8)"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    message = str(exc).split(":")[0] if isinstance(exc, ValueError) else str(exc)
    return f"{type(exc).__name__}: {message}"


_call_ids = itertools.count(1)


@attrs.define(kw_only=True)
class CallContext:
    """What llmpool knows about one call while it runs.

    Created by the client for every call and handed to every plugin hook.
    Confined to the calling thread; plugins keep per-call state in ``state``
    (keyed by their name, by convention).
    """

    operation: str
    model: str | None = None
    provider: str = "openai"
    call_id: int = attrs.field(factory=lambda: next(_call_ids))
    started: float = attrs.field(factory=time.monotonic)
    #: The monotonic instant at which the call's deadline ends (None: no deadline);
    #: a plugin that waits (for a rate limit, for shared state) never waits past it.
    deadline: float | None = None
    #: Attempts made so far (1 on the first try).
    attempt: int = 0
    #: Retries made so far (attempt - 1 once the call ends).
    retries: int = 0
    #: Whether the last attempt went over a reused connection (None: unknown).
    connection_reused: bool | None = None
    #: HTTP status of the last response (None before one arrived).
    status_code: int | None = None
    #: Seconds the last attempt waited for a free connection (None: unknown).
    pool_wait: float | None = None
    #: The monotonic instant the last attempt's response headers arrived (None: not yet).
    headers_at: float | None = None
    #: The base URL the call goes to (credentials never in it).
    base_url: str | None = None
    #: The endpoint of the client's group the last attempt went to (None: a plain client).
    endpoint: str | None = None
    #: Plugins' own per-call state.
    state: dict[str, Any] = attrs.field(factory=dict)

    @property
    def elapsed(self) -> float:
        """Seconds since the call started."""
        return time.monotonic() - self.started


@attrs.frozen(kw_only=True)
class Usage:
    """Token counts of a call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@attrs.frozen(kw_only=True)
class ToolCall:
    """A function call the model asked for. ``arguments`` is the JSON text."""

    id: str
    name: str
    arguments: str
    type: str = "function"


@attrs.frozen(kw_only=True)
class Message:
    """One message of a completion."""

    role: str
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@attrs.frozen(kw_only=True)
class Choice:
    """One alternative of a completion."""

    index: int
    message: Message
    finish_reason: str | None = None


@attrs.frozen(kw_only=True)
class ChatCompletion:
    """The result of ``Client.chat`` (and ``Client.complete``). Immutable.

    ``text`` and ``finish_reason`` are those of the first choice.
    """

    id: str
    model: str
    choices: tuple[Choice, ...]
    usage: Usage = attrs.field(factory=Usage)
    created: int | None = None
    request_id: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)
    #: The endpoint of the client's group that answered (None: a plain client).
    endpoint: str | None = None

    @property
    def text(self) -> str:
        """The first choice's content ("" when it has none)."""
        if not self.choices:
            return ""
        return self.choices[0].message.content or ""

    @property
    def finish_reason(self) -> str | None:
        """The first choice's finish reason."""
        return self.choices[0].finish_reason if self.choices else None


@attrs.frozen(kw_only=True)
class ChatChunk:
    """One increment of a streamed completion. Immutable."""

    delta: str = ""
    index: int = 0
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class Embeddings:
    """The result of ``Client.embed``: one vector per input, in input order."""

    vectors: tuple[tuple[float, ...], ...]
    model: str
    usage: Usage = attrs.field(factory=Usage)
    request_id: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)
    #: The endpoint of the client's group that answered (None: a plain client).
    endpoint: str | None = None
