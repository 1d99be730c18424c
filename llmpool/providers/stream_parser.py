"""The per-stream half of the provider contract: :class:`StreamParser`.

Re-exported by :mod:`llmpool.providers.base`.
"""

from __future__ import annotations

import abc
import json
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from llmpool.exceptions import InvalidResponse, StreamError, excerpt
from llmpool.models import ChatChunk, Usage
from llmpool.providers.parsing import NOT_JSON, invalid_response, opt_text

if TYPE_CHECKING:
    from llmpool.streaming import SSEEvent

__all__ = ["StreamParser", "text_chunk"]


_new = object.__new__
_SLOTS = {name: getattr(ChatChunk, name).__set__ for name in attrs.fields_dict(ChatChunk)}
_set_delta = _SLOTS["delta"]
_set_index = _SLOTS["index"]
_set_finish = _SLOTS["finish_reason"]
_set_usage = _SLOTS["usage"]
_set_tool_calls = _SLOTS["tool_calls"]
_set_raw = _SLOTS["raw"]


def text_chunk(delta: str, index: int, finish_reason: str | None, raw: Any) -> ChatChunk:
    """``ChatChunk(delta=..., index=..., finish_reason=..., raw=...)`` (no usage,
    no tool calls), built through its slots: the stream's common chunk without
    the frozen ``__init__``'s setattr calls. Records nothing on a parser."""
    chunk = _new(ChatChunk)
    _set_delta(chunk, delta)
    _set_index(chunk, index)
    _set_finish(chunk, finish_reason)
    _set_usage(chunk, None)
    _set_tool_calls(chunk, ())
    _set_raw(chunk, raw)
    return chunk


class StreamParser(abc.ABC):
    """Turns one stream's server-sent events into :class:`~llmpool.models.ChatChunk`.

    Thread safety: none needed; one parser per stream, confined to the thread
    reading it. It remembers what the caller needs at the end: whether the
    terminal marker arrived (:attr:`done`), the finish reason, the usage and
    the text so far (for the context of a StreamInterrupted).
    """

    #: Error types that a retry may cure (when nothing was delivered yet).
    transient_errors: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, request_id: str | None = None) -> None:
        self.request_id = request_id
        #: The response id the stream announced (None until it did).
        self.response_id: str | None = None
        #: The model the stream announced (None until it did).
        self.model: str | None = None
        self._done = False
        self._finish_reason: str | None = None
        self._usage: Usage | None = None

    @abc.abstractmethod
    def feed(self, event: SSEEvent) -> ChatChunk | None:
        """The chunk *event* carries, or None for events without one (pings,
        bookkeeping, the terminal marker). Raises StreamError for an error
        event and InvalidResponse for malformed data."""

    @property
    def done(self) -> bool:
        """Whether the terminal marker (``[DONE]``, ``message_stop``) was seen."""
        return self._done

    @property
    def finish_reason(self) -> str | None:
        """The last finish reason seen (OpenAI's vocabulary), or None."""
        return self._finish_reason

    @property
    def usage(self) -> Usage | None:
        """The token usage, once the stream reported it."""
        return self._usage

    def load(self, data: str) -> dict[str, Any]:
        """The JSON object of an event's data; InvalidResponse otherwise."""
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise invalid_response(
                data, self.request_id, "stream event", exc, problem=NOT_JSON
            ) from exc
        if not isinstance(obj, dict):
            raise self.invalid(data, TypeError(f"expected an object, got {type(obj).__name__}"))
        return obj

    def invalid(self, data: str, exc: BaseException) -> InvalidResponse:
        """The InvalidResponse for event *data* that *exc* found malformed.

        Stream parsers catch :data:`SHAPE_ERRORS` around their reading code
        and raise this (a plain ``try`` costs nothing on the hot path, where
        a context manager per event would)."""
        return invalid_response(data, self.request_id, "stream event", exc)

    def chunk(self, delta: str = "", **fields: Any) -> ChatChunk:
        """A chunk, recording its finish reason (first choice) and usage on the
        parser. The text is the Stream's to keep (bounded), never the parser's."""
        first = fields.get("index", 0) == 0
        if first and fields.get("finish_reason"):
            self._finish_reason = fields["finish_reason"]
        if fields.get("usage") is not None:
            self._usage = fields["usage"]
        return ChatChunk(delta=delta, **fields)

    def error(self, message: str, error_type: str | None, data: str) -> StreamError:
        """The StreamError for an error event; retryable when the type is transient."""
        return StreamError(
            message or "error event in the stream",
            status_code=200,
            request_id=self.request_id,
            body=excerpt(data),
            error_type=error_type,
            text="",  # the Stream fills in what it delivered
            delivered=False,
            retryable=error_type in self.transient_errors,
        )

    def error_event(self, data: str, obj: Any = None) -> StreamError:
        """The StreamError for an error event whose data is *data* (*obj* when
        already decoded): ``{"error": {"type", "message"}}`` (both providers),
        ``{"error": "..."}``, or plain text."""
        if obj is None:
            try:
                obj = json.loads(data)
            except (ValueError, RecursionError):
                return self.error(excerpt(data, 200), None, data)
        error = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(error, dict):
            kind = opt_text(error.get("type")) or opt_text(error.get("code"))
            return self.error(opt_text(error.get("message")) or "", kind, data)
        message = opt_text(error) or (
            opt_text(obj.get("message")) if isinstance(obj, dict) else None
        )
        return self.error(message or excerpt(data, 200), None, data)
