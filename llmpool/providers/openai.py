"""The OpenAI dialect: chat completions, completions, embeddings, models.

Also serves OpenAI-compatible servers (vLLM, llama.cpp, LiteLLM, Ollama's
``/v1``...): give the client their base URL.
"""

from __future__ import annotations

import base64
import json
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from llmpool.exceptions import ConfigError, LLMPoolError
from llmpool.models import ChatChunk, ChatCompletion, Choice, Embeddings, Message, Request
from llmpool.params import NO_PARAMS, CallParams
from llmpool.providers.base import Provider
from llmpool.providers.parsing import (
    SHAPE_ERRORS,
    as_dict,
    as_list,
    invalid_response,
    load_json,
    opt_int,
    opt_str,
    opt_text,
    parse_tool_calls,
    parse_usage,
    response_shape,
)
from llmpool.providers.payload import (
    MessageLike,
    check_model,
    normalise_messages,
    stop_list,
    with_extra,
)
from llmpool.providers.stream_parser import StreamParser, text_chunk

if TYPE_CHECKING:
    from llmpool.streaming import SSEEvent

__all__ = ["OpenAIProvider", "OpenAIStreamParser"]

#: json.loads's own scanner, called without its wrappers (stream events only).
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


class OpenAIProvider(Provider):
    """OpenAI's API and OpenAI-compatible servers.

    Options: ``organization`` and ``project`` (sent as ``OpenAI-Organization``
    and ``OpenAI-Project``). Without an API key no ``Authorization`` header is
    sent (local servers). Thread safety: one instance serves all threads.
    """

    name: ClassVar[str] = "openai"
    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    base_url_env: ClassVar[str | None] = "OPENAI_BASE_URL"
    secret_headers: ClassVar[frozenset[str]] = frozenset({"authorization"})

    def __init__(
        self,
        *,
        api_key: str | None = None,
        default_headers: Mapping[str, str] | None = None,
        organization: str | None = None,
        project: str | None = None,
        **options: Any,
    ) -> None:
        for key, value in (("organization", organization), ("project", project)):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{key} must be a string", key=key, value=value)
        self._organization = organization
        self._project = project
        super().__init__(api_key=api_key, default_headers=default_headers, **options)

    def static_headers(self) -> dict[str, str]:
        """``Authorization: Bearer``, organization and project headers."""
        headers = {}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self._organization:
            headers["OpenAI-Organization"] = self._organization
        if self._project:
            headers["OpenAI-Project"] = self._project
        return headers

    # ------------------------------------------------------------------ chat

    def build_chat(
        self,
        model: str,
        messages: Sequence[MessageLike],
        *,
        stream: bool = False,
        params: CallParams = NO_PARAMS,
    ) -> Request:
        """``POST /chat/completions``; a stream asks for the final usage chunk.
        Every parameter goes by its own name."""
        payload: dict[str, Any] = {
            "model": check_model(model),
            "messages": normalise_messages(messages),
        }
        if params.tools is not None:
            payload["tools"] = [dict(tool) for tool in params.tools]
        _sampling(payload, stream, params, _CHAT_FIELDS)
        return self.post("/chat/completions", with_extra(payload, params.extra_body), stream=stream)

    def parse_chat(self, body: bytes, *, request_id: str | None) -> ChatCompletion:
        """A ChatCompletion from an OpenAI ``chat.completion`` object."""
        return _completion(body, request_id, "chat completion", _chat_choice)

    def stream_parser(self, *, request_id: str | None = None) -> OpenAIStreamParser:
        """A parser for ``chat.completion.chunk`` (and completions) streams."""
        return OpenAIStreamParser(request_id=request_id)

    # ------------------------------------------------------------------ completions

    def build_complete(
        self,
        model: str,
        prompt: str,
        *,
        stream: bool = False,
        params: CallParams = NO_PARAMS,
    ) -> Request:
        """``POST /completions`` (the legacy text completion endpoint); tools,
        ``tool_choice`` and ``response_format`` do not apply there."""
        if not isinstance(prompt, str):
            raise ConfigError("prompt must be a string", key="prompt")
        for name in ("tools", "tool_choice", "response_format"):
            if getattr(params, name) is not None:
                raise ConfigError(f"{name} does not apply to text completions", key=name)
        payload: dict[str, Any] = {"model": check_model(model), "prompt": prompt}
        _sampling(payload, stream, params, _COMPLETE_FIELDS)
        return self.post("/completions", with_extra(payload, params.extra_body), stream=stream)

    def parse_complete(self, body: bytes, *, request_id: str | None) -> ChatCompletion:
        """A ChatCompletion whose message content is each choice's ``text``."""
        return _completion(body, request_id, "completion", _text_choice)

    # ------------------------------------------------------------------ embeddings

    def build_embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Request:
        """``POST /embeddings``. ``extra_body={"encoding_format": "base64"}``
        makes the body smaller and faster to parse where the server supports it."""
        if not isinstance(input, str) and not (
            isinstance(input, Sequence) and all(isinstance(i, str) for i in input)
        ):
            raise ConfigError("input must be a string or a list of strings", key="input")
        items = input if isinstance(input, str) else list(input)
        payload: dict[str, Any] = {"model": check_model(model), "input": items}
        return self.post("/embeddings", with_extra(payload, extra_body))

    def parse_embed(self, body: bytes, *, request_id: str | None) -> Embeddings:
        """Embeddings in input order (sorted by ``index``); base64 vectors decoded.

        The indexes must be 0 .. n-1, each once (an item without one takes
        its position); a duplicate or out-of-range index raises
        InvalidResponse rather than pair a vector with the wrong input."""
        data = load_json(body, request_id=request_id, what="embeddings")
        with response_shape(body, request_id, "embeddings"):
            obj = as_dict(data)
            items = _in_index_order([as_dict(item) for item in as_list(obj["data"])])
            return Embeddings(
                vectors=tuple(_vector(item["embedding"]) for item in items),
                model=str(obj.get("model") or ""),
                usage=parse_usage(obj.get("usage")),
                request_id=request_id,
                raw=obj,
            )


# --------------------------------------------------------------------------- parsing


#: CallParams fields sent under their own name, besides stop and tools.
_COMPLETE_FIELDS = ("temperature", "top_p", "max_tokens", "seed", "user")
_CHAT_FIELDS = (*_COMPLETE_FIELDS, "tool_choice", "response_format")


def _sampling(
    payload: dict[str, Any], stream: bool, params: CallParams, fields: tuple[str, ...]
) -> None:
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    if params is NO_PARAMS:
        return
    for name in fields:
        value = getattr(params, name)
        if value is not None:
            payload[name] = value
    stops = stop_list(params.stop)
    if stops is not None:
        payload["stop"] = stops


def _content(value: Any) -> str | None:
    """Message content: a string, None, or a list of text parts (joined)."""
    if isinstance(value, list):
        return "".join(str(as_dict(part).get("text") or "") for part in value)
    return opt_str(value)


def _chat_choice(index: int, choice: dict[str, Any]) -> Choice:
    message = as_dict(choice["message"])
    return Choice(
        index=opt_int(choice.get("index"), index) or 0,
        message=Message(
            role=str(message.get("role") or "assistant"),
            content=_content(message.get("content")),
            tool_calls=parse_tool_calls(message.get("tool_calls")),
        ),
        finish_reason=opt_str(choice.get("finish_reason")),
    )


def _text_choice(index: int, choice: dict[str, Any]) -> Choice:
    return Choice(
        index=opt_int(choice.get("index"), index) or 0,
        message=Message(role="assistant", content=opt_str(choice.get("text")) or ""),
        finish_reason=opt_str(choice.get("finish_reason")),
    )


def _completion(
    body: bytes,
    request_id: str | None,
    what: str,
    choice: Callable[[int, dict[str, Any]], Choice],
) -> ChatCompletion:
    data = load_json(body, request_id=request_id, what=what)
    # What response_shape does, as a plain try (no context manager per call).
    try:
        obj = as_dict(data)
        choices = as_list(obj["choices"])
        if not choices:
            raise ValueError("no choices")
        return ChatCompletion(
            id=str(obj.get("id") or ""),
            model=str(obj.get("model") or ""),
            choices=tuple([choice(i, as_dict(c)) for i, c in enumerate(choices)]),
            usage=parse_usage(obj.get("usage")),
            created=opt_int(obj.get("created")),
            request_id=request_id,
            raw=obj,
        )
    except LLMPoolError:
        raise
    except SHAPE_ERRORS as exc:
        raise invalid_response(body, request_id, what, exc) from exc


def _in_index_order(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """*items* placed by their ``index``; ValueError unless the indexes are
    0 .. len-1, each once."""
    placed: list[dict[str, Any] | None] = [None] * len(items)
    for position, item in enumerate(items):
        index = opt_int(item.get("index"))
        if index is None:
            index = position
        if not 0 <= index < len(items):
            raise ValueError(f"embedding index {index} out of range for {len(items)} vectors")
        if placed[index] is not None:
            raise ValueError(f"duplicate embedding index {index}")
        placed[index] = item
    return [item for item in placed if item is not None]


def _vector(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        floats = array("f")
        floats.frombytes(base64.b64decode(value, validate=True))
        if sys.byteorder == "big":
            floats.byteswap()
        return tuple(floats)
    return tuple(map(float, as_list(value)))


# --------------------------------------------------------------------------- streaming


class OpenAIStreamParser(StreamParser):
    """Reads ``data: {chunk}`` events up to ``data: [DONE]``.

    Confined to the thread reading the stream. A ``data: {"error": ...}``
    event raises StreamError (retryable for server and rate-limit errors
    when nothing was delivered).
    """

    transient_errors: ClassVar[frozenset[str]] = frozenset(
        {"server_error", "api_error", "overloaded_error", "rate_limit_error", "rate_limit_exceeded"}
    )

    def feed(self, event: SSEEvent) -> ChatChunk | None:
        """The chunk of one event (None for ``[DONE]`` and empty keep-alives)."""
        if event.event is None:
            return self.feed_data(event.data)
        return self._general(event.data, event.event)

    def feed_data(self, data: str) -> ChatChunk | None:
        """:meth:`feed` for an event of the default type whose data is *data*
        (what the Stream hands over for the common piece, without an event)."""
        if data[:1] == "{":
            # The common event, a JSON object that is no error: straight to its
            # chunk (anything else goes the general way, which reports it).
            # json.loads without its wrappers: a scan from the first character
            # that must end at the last (anything else goes the general way).
            try:
                obj, end = _scan(data, 0)
            except (StopIteration, ValueError, RecursionError):
                obj = end = None
            if end == len(data) and type(obj) is dict and obj.get("error") is None:
                try:
                    return self._chunk(obj)
                except SHAPE_ERRORS as exc:
                    raise self.invalid(data, exc) from exc
        return self._general(data, None)

    def _general(self, data: str, kind: str | None) -> ChatChunk | None:
        if data == "[DONE]":
            self._done = True
            return None
        if not data.strip():
            return None
        if kind == "error":
            raise self.error_event(data)
        obj = self.load(data)
        if obj.get("error") is not None:
            raise self.error_event(data, obj)
        try:
            return self._chunk(obj)
        except SHAPE_ERRORS as exc:
            raise self.invalid(data, exc) from exc

    def _chunk(self, obj: dict[str, Any]) -> ChatChunk:
        if self.response_id is None:
            self.response_id = opt_text(obj.get("id"))
            self.model = opt_text(obj.get("model"))
        if not obj.get("usage"):
            # The common event: one choice whose delta holds at most text. Its
            # chunk is built here; anything else (or any odd type) is read and
            # checked by _full_chunk.
            choices = obj.get("choices")
            if type(choices) is list and len(choices) == 1:
                choice = choices[0]
                delta = choice.get("delta") if type(choice) is dict else None
                if type(delta) is dict and not delta.get("tool_calls"):
                    text = delta.get("content")
                    index = choice.get("index", 0)
                    finish = choice.get("finish_reason")
                    if (
                        (text is None or type(text) is str)
                        and type(index) is int
                        and (finish is None or type(finish) is str)
                    ):
                        if finish and index == 0:
                            self._finish_reason = finish
                        return text_chunk(text or "", index, finish, obj)
        return self._full_chunk(obj)

    def _full_chunk(self, obj: dict[str, Any]) -> ChatChunk:
        """The chunk of any event object, every field read and checked."""
        usage = parse_usage(obj["usage"]) if obj.get("usage") else None
        choices = as_list(obj.get("choices") or [])
        if not choices:
            return self.chunk(usage=usage, raw=obj)
        choice = as_dict(choices[0])
        delta = as_dict(choice.get("delta") or {})
        text = delta.get("content") if "delta" in choice else choice.get("text")
        tool_calls = tuple(as_dict(call) for call in as_list(delta.get("tool_calls") or []))
        return self.chunk(
            opt_str(text) or "",
            index=opt_int(choice.get("index"), 0) or 0,
            finish_reason=opt_str(choice.get("finish_reason")),
            usage=usage,
            tool_calls=tool_calls,
            raw=obj,
        )
