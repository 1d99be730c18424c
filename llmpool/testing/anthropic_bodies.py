"""Anthropic-shaped bodies: Messages (JSON and its event stream), models, errors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llmpool.testing.bodies import (
    ApiShape,
    Reply,
    SseEvent,
    StreamBody,
    new_id,
    split_chunks,
    split_even,
)

__all__ = ["SHAPE", "last_user_text", "message", "message_stream", "models", "prompt_texts"]

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _error(status: int, message: str | None = None, _param: str | None = None) -> dict[str, Any]:
    kind = _ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message or f"Mock error {status}."}}


def _error_event(message: str | None) -> SseEvent:
    return SseEvent(_error(529, message or "Overloaded"), "error")


def _clear_finish(body: dict[str, Any]) -> None:
    if body.get("type") == "message":
        body["stop_reason"] = None


SHAPE = ApiShape(
    name="anthropic",
    request_id_header="request-id",
    error_body=_error,
    error_event=_error_event,
    clear_finish=_clear_finish,
)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            block.get("text", "")
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
    return ""


def prompt_texts(payload: dict[str, Any]) -> list[str]:
    """The system prompt and every message's text, for token counts."""
    texts = [_text_of(payload.get("system", ""))]
    texts.extend(_text_of(m.get("content")) for m in payload["messages"] if isinstance(m, dict))
    return texts


def last_user_text(payload: dict[str, Any]) -> str:
    """The last user message's text, for echo."""
    for item in reversed(payload["messages"]):
        if isinstance(item, dict) and item.get("role") == "user":
            return _text_of(item.get("content"))
    return ""


def _content(reply: Reply) -> list[dict[str, Any]]:
    if reply.tool_name is not None:
        return [
            {
                "type": "tool_use",
                "id": reply.tool_id,
                "name": reply.tool_name,
                "input": json.loads(reply.tool_arguments),
            }
        ]
    return [{"type": "text", "text": reply.text}]


def _message(reply: Reply, model: str, content: list[Any], done: bool) -> dict[str, Any]:
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP[reply.finish] if done else None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.prompt_tokens,
            "output_tokens": reply.completion_tokens if done else 1,
        },
    }


def message(reply: Reply, model: str) -> dict[str, Any]:
    """A ``message`` body."""
    return _message(reply, model, _content(reply), done=True)


def message_stream(reply: Reply, model: str, chunks: int | None) -> StreamBody:
    """Anthropic's event sequence for a streamed message."""
    if reply.tool_name is None:
        block: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in split_chunks(reply.text, chunks)]
    else:
        block = {"type": "tool_use", "id": reply.tool_id, "name": reply.tool_name, "input": {}}
        deltas = [
            {"type": "input_json_delta", "partial_json": p}
            for p in split_even(reply.tool_arguments, chunks or 2)
        ]
    start = {"type": "message_start", "message": _message(reply, model, [], False)}
    return StreamBody(
        preamble=[
            SseEvent(start, "message_start"),
            SseEvent(
                {"type": "content_block_start", "index": 0, "content_block": block},
                "content_block_start",
            ),
            SseEvent({"type": "ping"}, "ping"),
        ],
        deltas=[
            SseEvent({"type": "content_block_delta", "index": 0, "delta": d}, "content_block_delta")
            for d in deltas
        ],
        ending=[
            SseEvent({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            SseEvent(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": _STOP[reply.finish], "stop_sequence": None},
                    "usage": {"output_tokens": reply.completion_tokens},
                },
                "message_delta",
            ),
            SseEvent({"type": "message_stop"}, "message_stop"),
        ],
    )


def models(ids: Sequence[str]) -> dict[str, Any]:
    """Anthropic's ``GET /v1/models`` list body."""
    return {
        "data": [
            {
                "type": "model",
                "id": model,
                "display_name": model,
                "created_at": "2025-01-01T00:00:00Z",
            }
            for model in ids
        ],
        "has_more": False,
        "first_id": ids[0] if ids else None,
        "last_id": ids[-1] if ids else None,
    }
