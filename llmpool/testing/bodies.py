"""What both API shapes share: the reply the mock "model" gives, SSE events, responses.

The provider modules (:mod:`~llmpool.testing.openai_bodies`,
:mod:`~llmpool.testing.anthropic_bodies`) turn a :class:`Reply` into their
JSON bodies and event streams. Everything here is a plain value built per
request and confined to the connection thread that built it.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from typing import Any, Literal

import attrs

__all__ = [
    "ApiShape",
    "JsonResponse",
    "Reply",
    "SseEvent",
    "StreamBody",
    "StreamResponse",
    "count_tokens",
    "new_id",
    "split_chunks",
    "split_pieces",
]

Finish = Literal["stop", "length", "tool"]

_PIECE = re.compile(r"\s*\S+")


def new_id(prefix: str) -> str:
    """A fresh id like the providers' (``chatcmpl-...``, ``msg_...``)."""
    return prefix + secrets.token_hex(12)


def count_tokens(text: str) -> int:
    """The mock's token count: one token per whitespace-separated word."""
    return len(text.split())


def split_pieces(text: str) -> list[str]:
    """Words with their leading whitespace; joined they give *text* back."""
    pieces = _PIECE.findall(text)
    tail = text[sum(map(len, pieces)) :]
    if tail:
        if pieces:
            pieces[-1] += tail
        else:
            pieces = [tail]
    return pieces


def split_chunks(text: str, count: int | None) -> list[str]:
    """*text* in *count* chunks of whole words (None: one chunk per word)."""
    pieces = split_pieces(text)
    if count is None or count >= len(pieces):
        return pieces
    size, extra = divmod(len(pieces), count)
    chunks, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        chunks.append("".join(pieces[start:end]))
        start = end
    return chunks


def split_even(text: str, count: int) -> list[str]:
    """*text* in at most *count* pieces of about equal length (for tool arguments)."""
    if not text:
        return []
    step = -(-len(text) // max(1, count))
    return [text[i : i + step] for i in range(0, len(text), step)]


@attrs.frozen(kw_only=True)
class Reply:
    """What the mock model answers to one request: text or a tool call, and token counts."""

    text: str
    finish: Finish
    prompt_tokens: int
    completion_tokens: int
    tool_name: str | None = None
    tool_arguments: str = "{}"
    tool_id: str = ""

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@attrs.frozen
class SseEvent:
    """One server-sent event: ``data`` is a JSON-able dict, or a literal string like [DONE]."""

    data: Any
    event: str | None = None

    def encode(self) -> bytes:
        """The event as it goes on the wire, blank line included."""
        payload = self.data if isinstance(self.data, str) else json.dumps(self.data)
        if self.event is None:
            return f"data: {payload}\n\n".encode()
        return f"event: {self.event}\ndata: {payload}\n\n".encode()


@attrs.define(kw_only=True)
class StreamBody:
    """A stream in three parts, so that faults can cut it between the deltas.

    ``preamble``: events before any content (OpenAI's role chunk; Anthropic's
    message_start, content_block_start, ping). ``deltas``: one event per
    piece of content. ``ending``: finish reason, usage, ``[DONE]`` or
    ``message_stop``.
    """

    preamble: list[SseEvent]
    deltas: list[SseEvent]
    ending: list[SseEvent]


@attrs.frozen(kw_only=True)
class ApiShape:
    """How one provider shapes request ids and errors."""

    name: str
    request_id_header: str
    #: (status, message or None, param or None) -> the error body.
    error_body: Callable[[int, str | None, str | None], dict[str, Any]]
    #: (message or None) -> the error event inside a 200 stream.
    error_event: Callable[[str | None], SseEvent]
    #: (body) -> None: clear the finish reason of a JSON body in place.
    clear_finish: Callable[[dict[str, Any]], None]


@attrs.define(kw_only=True)
class JsonResponse:
    """A response with a JSON body and ``Content-Length``."""

    shape: ApiShape
    status: int
    body: dict[str, Any]
    headers: list[tuple[str, str]] = attrs.field(factory=list)


@attrs.define(kw_only=True)
class StreamResponse:
    """A 200 response whose body is a server-sent event stream (chunked)."""

    shape: ApiShape
    body: StreamBody
