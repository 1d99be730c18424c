"""From a parsed request to the mock's normal answer: routing, validation, the reply.

Faults are applied afterwards (:mod:`llmpool.testing.exchange`); this module
only knows what a well-behaved server would say.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmpool.testing import anthropic_bodies, openai_bodies
from llmpool.testing.bodies import (
    ApiShape,
    JsonResponse,
    Reply,
    StreamResponse,
    count_tokens,
    new_id,
    split_pieces,
)
from llmpool.testing.http11 import HttpRequest
from llmpool.testing.settings import MockSettings

__all__ = ["Response", "error_response", "make_reply", "route", "shape_for"]

Response = JsonResponse | StreamResponse
Handler = Callable[[dict[str, Any], HttpRequest, MockSettings], Response]


class _Invalid(Exception):
    """A request the real API would refuse with 400; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def shape_for(path: str) -> ApiShape:
    """The API shape a path speaks: Anthropic for ``/v1/messages``, OpenAI otherwise."""
    return anthropic_bodies.SHAPE if path.startswith("/v1/messages") else openai_bodies.SHAPE


def error_response(
    shape: ApiShape, status: int, message: str | None = None, param: str | None = None
) -> JsonResponse:
    """A provider-shaped error response."""
    return JsonResponse(shape=shape, status=status, body=shape.error_body(status, message, param))


def make_reply(
    settings: MockSettings,
    prompt: list[str],
    last_user: str,
    max_tokens: int | None,
    *,
    tools: bool,
    tool_prefix: str,
) -> Reply:
    """The mock model's answer: a tool call, the configured text or an echo, cut at max_tokens."""
    prompt_tokens = sum(count_tokens(text) for text in prompt)
    if tools and settings.tool_call:
        return Reply(
            text="",
            finish="tool",
            prompt_tokens=prompt_tokens,
            completion_tokens=max(1, count_tokens(settings.tool_arguments)),
            tool_name=settings.tool_call,
            tool_arguments=settings.tool_arguments,
            tool_id=new_id(tool_prefix),
        )
    text = last_user if settings.echo else settings.reply
    finish: Any = "stop"
    if max_tokens is not None:
        pieces = split_pieces(text)
        if len(pieces) > max_tokens:
            text, finish = "".join(pieces[:max_tokens]), "length"
    return Reply(
        text=text, finish=finish, prompt_tokens=prompt_tokens, completion_tokens=count_tokens(text)
    )


def _require(payload: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = payload.get(key)
    if value is None:
        raise _Invalid(f"{key}: Field required", key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _Invalid(f"{key}: invalid type", key)
    return value


def _max_tokens(payload: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        if payload.get(key) is not None:
            value = _require(payload, key, int)
            if value < 1:
                raise _Invalid(f"{key} must be at least 1", key)
            return int(value)
    return None


def _chat(payload: dict[str, Any], _req: HttpRequest, settings: MockSettings) -> Response:
    model = _require(payload, "model", str)
    if not _require(payload, "messages", list):
        raise _Invalid("messages must not be empty", "messages")
    reply = make_reply(
        settings,
        openai_bodies.prompt_texts(payload),
        openai_bodies.last_user_text(payload),
        _max_tokens(payload, "max_completion_tokens", "max_tokens"),
        tools=bool(payload.get("tools")),
        tool_prefix="call_",
    )
    shape = openai_bodies.SHAPE
    if payload.get("stream") is True:
        body = openai_bodies.chat_stream(payload, reply, model, settings.stream_chunks)
        return StreamResponse(shape=shape, body=body)
    return JsonResponse(shape=shape, status=200, body=openai_bodies.chat_completion(reply, model))


def _completions(payload: dict[str, Any], _req: HttpRequest, settings: MockSettings) -> Response:
    model = _require(payload, "model", str)
    _require(payload, "prompt", (str, list))
    reply = make_reply(
        settings,
        openai_bodies.prompt_texts(payload),
        openai_bodies.last_user_text(payload),
        _max_tokens(payload, "max_tokens"),
        tools=False,
        tool_prefix="call_",
    )
    shape = openai_bodies.SHAPE
    if payload.get("stream") is True:
        body = openai_bodies.completion_stream(payload, reply, model, settings.stream_chunks)
        return StreamResponse(shape=shape, body=body)
    return JsonResponse(shape=shape, status=200, body=openai_bodies.completion(reply, model))


def _embeddings(payload: dict[str, Any], _req: HttpRequest, settings: MockSettings) -> Response:
    _require(payload, "model", str)
    texts = openai_bodies.embedding_inputs(payload.get("input"))
    if texts is None:
        raise _Invalid("input must be a string or a non-empty array", "input")
    dim = payload.get("dimensions")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 0 < dim <= 65536:
        dim = settings.embedding_dim
    body = openai_bodies.embeddings(payload, texts, dim)
    return JsonResponse(shape=openai_bodies.SHAPE, status=200, body=body)


def _messages(payload: dict[str, Any], _req: HttpRequest, settings: MockSettings) -> Response:
    model = _require(payload, "model", str)
    if not _require(payload, "messages", list):
        raise _Invalid("messages: at least one message is required", "messages")
    max_tokens = _max_tokens(payload, "max_tokens")
    if max_tokens is None:
        raise _Invalid("max_tokens: Field required", "max_tokens")
    reply = make_reply(
        settings,
        anthropic_bodies.prompt_texts(payload),
        anthropic_bodies.last_user_text(payload),
        max_tokens,
        tools=bool(payload.get("tools")),
        tool_prefix="toolu_",
    )
    shape = anthropic_bodies.SHAPE
    if payload.get("stream") is True:
        body = anthropic_bodies.message_stream(reply, model, settings.stream_chunks)
        return StreamResponse(shape=shape, body=body)
    return JsonResponse(shape=shape, status=200, body=anthropic_bodies.message(reply, model))


def _models(_payload: dict[str, Any], req: HttpRequest, settings: MockSettings) -> Response:
    if "anthropic-version" in req.headers:
        body = anthropic_bodies.models(settings.models)
        return JsonResponse(shape=anthropic_bodies.SHAPE, status=200, body=body)
    return JsonResponse(
        shape=openai_bodies.SHAPE, status=200, body=openai_bodies.models(settings.models)
    )


_ROUTES: dict[str, tuple[str, Handler]] = {
    "/v1/chat/completions": ("POST", _chat),
    "/v1/completions": ("POST", _completions),
    "/v1/embeddings": ("POST", _embeddings),
    "/v1/messages": ("POST", _messages),
    "/v1/models": ("GET", _models),
}


def _payload(request: HttpRequest) -> dict[str, Any]:
    try:
        payload = request.json() if request.body else None
    except ValueError:
        raise _Invalid("We could not parse the JSON body of your request.") from None
    if not isinstance(payload, dict):
        raise _Invalid("The request body must be a JSON object.")
    return payload


def route(request: HttpRequest, settings: MockSettings) -> Response:
    """The answer a well-behaved server gives *request* (errors included)."""
    shape = shape_for(request.path)
    entry = _ROUTES.get(request.path)
    if entry is None:
        return error_response(shape, 404, f"Unknown request URL: {request.method} {request.path}")
    method, handler = entry
    if request.method != method:
        return error_response(shape, 405, f"Method {request.method} not allowed here.")
    try:
        payload = _payload(request) if method == "POST" else {}
        return handler(payload, request, settings)
    except _Invalid as exc:
        return error_response(shape, 400, str(exc), exc.param)
