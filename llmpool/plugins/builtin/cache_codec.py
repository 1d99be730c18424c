"""Results as bytes for a shared cache: JSON, never pickle.

A cache shared through Redis is readable and writable by every process that
can reach the Redis; unpickling what it holds would run whatever code a
writer chose. JSON rebuilds only llmpool's own immutable values:
:class:`~llmpool.ChatCompletion` and :class:`~llmpool.Embeddings`. Pure
functions; thread-safe.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from llmpool.models import ChatCompletion, Choice, Embeddings, Message, ToolCall, Usage

__all__ = ["FORMAT", "decode", "encode"]

#: The format's version, first in every entry: entries of another version are misses.
FORMAT = 1


def encode(result: Any) -> bytes | None:
    """*result* as compact JSON bytes, or None for a type the cache does not share."""
    if isinstance(result, ChatCompletion):
        kind = "chat"
    elif isinstance(result, Embeddings):
        kind = "embed"
    else:
        return None
    fields = attrs.asdict(result, recurse=True)
    try:
        text = json.dumps([FORMAT, kind, fields], separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    return text.encode()


def decode(data: bytes) -> Any:
    """The result *data* holds, or None when it is not an entry of this format."""
    try:
        version, kind, fields = json.loads(data)
    except (TypeError, ValueError):
        return None
    if version != FORMAT or not isinstance(fields, dict):
        return None
    try:
        usage = Usage(**fields.pop("usage"))
        if kind == "embed":
            vectors = tuple(tuple(v) for v in fields.pop("vectors"))
            return Embeddings(vectors=vectors, usage=usage, **fields)
        if kind != "chat":
            return None
        choices = tuple(_choice(c) for c in fields.pop("choices"))
        return ChatCompletion(choices=choices, usage=usage, **fields)
    except (TypeError, KeyError, AttributeError):
        return None


def _choice(data: dict[str, Any]) -> Choice:
    message = dict(data["message"])
    calls = tuple(ToolCall(**c) for c in message.pop("tool_calls", ()))
    return Choice(
        index=data["index"],
        message=Message(tool_calls=calls, **message),
        finish_reason=data.get("finish_reason"),
    )
