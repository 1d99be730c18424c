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
]


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
        bytes); :meth:`replace` makes a new value, encoded afresh.
        """
        if self._body is None and self.payload is not None:
            encoded = json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False)
            object.__setattr__(self, "_body", encoded.encode())
        return self._body

    def replace(self, **changes: Any) -> Request:
        """Return a copy with *changes* applied (``attrs.evolve``)."""
        return attrs.evolve(self, **changes)


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
    #: Attempts made so far (1 on the first try).
    attempt: int = 0
    #: Retries made so far (attempt - 1 once the call ends).
    retries: int = 0
    #: Whether the last attempt went over a reused connection (None: unknown).
    connection_reused: bool | None = None
    #: HTTP status of the last response (None before one arrived).
    status_code: int | None = None
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
