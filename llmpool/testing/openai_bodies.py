"""OpenAI-shaped bodies: chat completions, completions, embeddings, models, errors."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import time
from collections.abc import Sequence
from typing import Any

from llmpool.testing.bodies import (
    ApiShape,
    Reply,
    SseEvent,
    StreamBody,
    count_tokens,
    new_id,
    split_chunks,
    split_even,
)

__all__ = [
    "SHAPE",
    "chat_completion",
    "chat_stream",
    "completion",
    "completion_stream",
    "embeddings",
    "last_user_text",
    "models",
    "prompt_texts",
]

DONE = SseEvent("[DONE]")
_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}
# status -> (type, code)
_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout_error", None),
    409: ("invalid_request_error", "conflict"),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def _error(status: int, message: str | None = None, param: str | None = None) -> dict[str, Any]:
    kind, code = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {
        "error": {
            "message": message or f"Mock error {status}.",
            "type": kind,
            "param": param,
            "code": code,
        }
    }


def _error_event(message: str | None) -> SseEvent:
    return SseEvent(
        _error(500, message or "The server had an error while processing your request.")
    )


def _clear_finish(body: dict[str, Any]) -> None:
    for choice in body.get("choices", ()):
        choice["finish_reason"] = None


SHAPE = ApiShape(
    name="openai",
    request_id_header="x-request-id",
    error_body=_error,
    error_event=_error_event,
    clear_finish=_clear_finish,
)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def prompt_texts(payload: dict[str, Any]) -> list[str]:
    """Every text of the prompt (chat messages or completion prompt), for token counts."""
    if "messages" in payload:
        return [_content_text(m.get("content")) for m in payload["messages"] if isinstance(m, dict)]
    prompt = payload.get("prompt", "")
    return [p for p in prompt if isinstance(p, str)] if isinstance(prompt, list) else [str(prompt)]


def last_user_text(payload: dict[str, Any]) -> str:
    """The last user message's text (chat) or the prompt (completions), for echo."""
    if "messages" not in payload:
        texts = prompt_texts(payload)
        return texts[-1] if texts else ""
    for message in reversed(payload["messages"]):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.total_tokens,
    }


def _tool_call(reply: Reply, arguments: str) -> dict[str, Any]:
    return {
        "id": reply.tool_id,
        "type": "function",
        "function": {"name": reply.tool_name, "arguments": arguments},
    }


def chat_completion(reply: Reply, model: str) -> dict[str, Any]:
    """A ``chat.completion`` body."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.tool_name is not None:
        message["content"] = None
        message["tool_calls"] = [_tool_call(reply, reply.tool_arguments)]
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _FINISH[reply.finish],
            }
        ],
        "usage": _usage(reply),
        "system_fingerprint": "fp_mock",
    }


def _include_usage(payload: dict[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class _ChunkFactory:
    """Builds the chunks of one stream, which share id, created and model."""

    def __init__(self, obj: str, prefix: str, model: str, usage: bool) -> None:
        self.head: dict[str, Any] = {
            "id": new_id(prefix),
            "object": obj,
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_mock",
        }
        self.usage = usage

    def event(self, choices: list[dict[str, Any]], usage: Any = None) -> SseEvent:
        data: dict[str, Any] = {**self.head, "choices": choices}
        if self.usage:
            data["usage"] = usage
        return SseEvent(data)

    def ending(self, choice: dict[str, Any], reply: Reply) -> list[SseEvent]:
        events = [self.event([choice])]
        if self.usage:
            events.append(self.event([], _usage(reply)))
        events.append(DONE)
        return events


def _delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def chat_stream(
    payload: dict[str, Any], reply: Reply, model: str, chunks: int | None
) -> StreamBody:
    """The ``chat.completion.chunk`` events of a streamed chat completion."""
    factory = _ChunkFactory("chat.completion.chunk", "chatcmpl-", model, _include_usage(payload))
    first: dict[str, Any]
    deltas: list[dict[str, Any]]
    if reply.tool_name is None:
        first = {"role": "assistant", "content": "", "refusal": None}
        deltas = [{"content": piece} for piece in split_chunks(reply.text, chunks)]
    else:
        first = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"index": 0, **_tool_call(reply, "")}],
        }
        deltas = [
            {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            for piece in split_even(reply.tool_arguments, chunks or 2)
        ]
    return StreamBody(
        preamble=[factory.event([_delta(first)])],
        deltas=[factory.event([_delta(d)]) for d in deltas],
        ending=factory.ending(_delta({}, _FINISH[reply.finish]), reply),
    )


def _text_choice(text: str, finish: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}


def completion(reply: Reply, model: str) -> dict[str, Any]:
    """A legacy ``text_completion`` body."""
    return {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [_text_choice(reply.text, _FINISH[reply.finish])],
        "usage": _usage(reply),
    }


def completion_stream(
    payload: dict[str, Any], reply: Reply, model: str, chunks: int | None
) -> StreamBody:
    """The events of a streamed legacy completion."""
    factory = _ChunkFactory("text_completion", "cmpl-", model, _include_usage(payload))
    return StreamBody(
        preamble=[],
        deltas=[
            factory.event([_text_choice(piece, None)]) for piece in split_chunks(reply.text, chunks)
        ],
        ending=factory.ending(_text_choice("", _FINISH[reply.finish]), reply),
    )


def embedding_inputs(value: Any) -> list[str] | None:
    """The inputs of an embeddings request as texts, or None when malformed."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(item, int) for item in value):
        return [json.dumps(value)]
    if all(isinstance(item, (str, list)) for item in value):
        return [item if isinstance(item, str) else json.dumps(item) for item in value]
    return None


def vector(text: str, dim: int) -> list[float]:
    """A deterministic unit vector of *dim* floats for *text*."""
    raw = b"".join(
        hashlib.sha256(b"%d:%s" % (block, text.encode())).digest()
        for block in range(-(-dim * 4 // 32))
    )
    values = [v / 2**31 - 1.0 for v in struct.unpack(f"<{dim}I", raw[: dim * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def embeddings(payload: dict[str, Any], texts: Sequence[str], dim: int) -> dict[str, Any]:
    """An embeddings list body: one vector per input, in order."""
    base64_format = payload.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        values = vector(text, dim)
        encoded: Any = values
        if base64_format:
            encoded = base64.b64encode(struct.pack(f"<{dim}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(count_tokens(t) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": payload.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def models(ids: Sequence[str]) -> dict[str, Any]:
    """The ``GET /v1/models`` list body."""
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": 1700000000, "owned_by": "llmpool"}
            for model in ids
        ],
    }
