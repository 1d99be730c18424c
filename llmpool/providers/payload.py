"""Building a provider's request payload from a call's arguments.

Checks that turn a caller's mistake into a :class:`~llmpool.exceptions.ConfigError`
naming the argument (never its secret content), and the conversions every
provider shares. Public for third-party providers; re-exported by
:mod:`llmpool.providers.base`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmpool.exceptions import ConfigError
from llmpool.models import Message, encode_json

__all__ = [
    "MessageLike",
    "check_model",
    "merge_headers",
    "message_dict",
    "normalise_messages",
    "stop_list",
    "with_extra",
]

#: A chat message: an OpenAI-style dict, or a :class:`~llmpool.models.Message`
#: taken from an earlier result (for tool-call round trips).
MessageLike = Mapping[str, Any] | Message


def merge_headers(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """*base* updated with *extra*, header names compared without case
    (the spelling of *extra* wins)."""
    merged = dict(base)
    for name, value in extra.items():
        for old in [k for k in merged if k.lower() == name.lower()]:
            del merged[old]
        merged[name] = value
    return merged


def message_dict(message: MessageLike) -> dict[str, Any]:
    """An OpenAI-style dict for *message* (a dict is copied, a Message converted)."""
    if isinstance(message, Message):
        out: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": call.type,
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ]
        return out
    if isinstance(message, Mapping) and isinstance(message.get("role"), str):
        return dict(message)
    raise ConfigError(
        f"each message must be a mapping with a 'role' or a Message, got {message!r:.80}",
        key="messages",
    )


def normalise_messages(messages: Sequence[MessageLike]) -> list[dict[str, Any]]:
    """Check *messages* and return them as a list of OpenAI-style dicts."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ConfigError(
            f"messages must be a list of messages, got {type(messages).__name__}",
            key="messages",
        )
    if not messages:
        raise ConfigError("messages must not be empty", key="messages")
    return [message_dict(m) for m in messages]


def check_model(model: str) -> str:
    """*model* when it is a non-empty string; ConfigError otherwise."""
    if not isinstance(model, str) or not model:
        raise ConfigError(f"model must be a non-empty string, got {model!r}", key="model")
    return model


def stop_list(stop: str | Sequence[str] | None) -> list[str] | None:
    """*stop* as a list of strings (None stays None)."""
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if not all(isinstance(s, str) for s in stop):
        raise ConfigError("stop must be a string or a list of strings", key="stop")
    return list(stop)


def with_extra(payload: dict[str, Any], extra_body: Mapping[str, Any] | None) -> dict[str, Any]:
    """*payload* updated with the caller's *extra_body* (which wins).

    *extra_body* must be a mapping that strict JSON can hold: a datetime, a
    set, bytes, NaN or infinity in it raises ConfigError (key
    ``extra_body``) naming the type, never the content."""
    if extra_body is not None:
        if not isinstance(extra_body, Mapping):
            raise ConfigError("extra_body must be a mapping", key="extra_body")
        encode_json(extra_body, key="extra_body")
        payload.update(extra_body)
    return payload
