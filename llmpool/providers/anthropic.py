"""The Anthropic Messages dialect, behind the same OpenAI-style call shape.

Callers pass OpenAI-style messages and tools; this module maps them to the
Messages API and maps the answers back (see the providers documentation for
the tables): system messages become the top-level ``system``, tool calls
become ``tool_use``/``tool_result`` blocks, ``stop_reason`` becomes an
OpenAI ``finish_reason``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from llmpool.exceptions import ConfigError, LLMPoolError
from llmpool.models import ChatChunk, ChatCompletion, Choice, Message, Request, ToolCall, Usage
from llmpool.providers.base import Provider
from llmpool.providers.parsing import (
    SHAPE_ERRORS,
    as_dict,
    as_list,
    load_json,
    opt_int,
    opt_str,
    opt_text,
    response_shape,
)
from llmpool.providers.payload import (
    MessageLike,
    check_model,
    normalise_messages,
    stop_list,
    with_extra,
)
from llmpool.providers.stream_parser import StreamParser

if TYPE_CHECKING:
    from llmpool.streaming import SSEEvent

__all__ = [
    "FINISH_REASONS",
    "AnthropicProvider",
    "AnthropicStreamParser",
    "map_finish_reason",
    "map_messages",
    "map_tools",
    "map_usage",
]

#: Anthropic ``stop_reason`` -> OpenAI ``finish_reason`` (others pass through).
FINISH_REASONS: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_EMPTY_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}}


class AnthropicProvider(Provider):
    """Anthropic's Messages API.

    Options: ``anthropic_version`` (the ``anthropic-version`` header,
    default ``2023-06-01``), ``default_max_tokens`` (sent when a call gives
    no ``max_tokens``, which the API requires; default 1024) and ``beta``
    (``anthropic-beta`` feature names). Completions and embeddings are not
    offered by the API and raise ConfigError. Thread safety: one instance
    serves all threads.
    """

    name: ClassVar[str] = "anthropic"
    default_base_url: ClassVar[str | None] = "https://api.anthropic.com/v1"
    request_id_headers: ClassVar[tuple[str, ...]] = ("request-id", "x-request-id")
    secret_headers: ClassVar[frozenset[str]] = frozenset({"x-api-key"})

    def __init__(
        self,
        *,
        api_key: str | None = None,
        default_headers: Mapping[str, str] | None = None,
        anthropic_version: str = "2023-06-01",
        default_max_tokens: int = 1024,
        beta: str | Sequence[str] | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(anthropic_version, str) or not anthropic_version:
            raise ConfigError(
                "anthropic_version must be a non-empty string",
                key="anthropic_version",
                value=anthropic_version,
            )
        if (
            not isinstance(default_max_tokens, int)
            or isinstance(default_max_tokens, bool)
            or default_max_tokens < 1
        ):
            raise ConfigError(
                "default_max_tokens must be an integer >= 1",
                key="default_max_tokens",
                value=default_max_tokens,
            )
        self._version = anthropic_version
        self._default_max_tokens = default_max_tokens
        self._beta = [beta] if isinstance(beta, str) else list(beta or ())
        super().__init__(api_key=api_key, default_headers=default_headers, **options)

    def static_headers(self) -> dict[str, str]:
        """``x-api-key``, ``anthropic-version`` and ``anthropic-beta``."""
        headers = {"anthropic-version": self._version}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        if self._beta:
            headers["anthropic-beta"] = ",".join(self._beta)
        return headers

    def build_chat(
        self,
        model: str,
        messages: Sequence[MessageLike],
        *,
        stream: bool = False,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Request:
        """``POST /messages`` with OpenAI-style *messages* and *tools* mapped."""
        system, mapped = map_messages(normalise_messages(messages))
        payload: dict[str, Any] = {
            "model": check_model(model),
            "max_tokens": self._default_max_tokens if max_tokens is None else max_tokens,
            "messages": mapped,
        }
        if system is not None:
            payload["system"] = system
        if stream:
            payload["stream"] = True
        if temperature is not None:
            payload["temperature"] = temperature
        stops = stop_list(stop)
        if stops is not None:
            payload["stop_sequences"] = stops
        if tools is not None:
            payload["tools"] = map_tools(tools)
        return self.post("/messages", with_extra(payload, extra_body), stream=stream)

    def parse_chat(self, body: bytes, *, request_id: str | None) -> ChatCompletion:
        """A ChatCompletion from a ``message`` object (text blocks joined,
        ``tool_use`` blocks as tool calls)."""
        data = load_json(body, request_id=request_id, what="message")
        with response_shape(body, request_id, "message"):
            obj = as_dict(data)
            texts: list[str] = []
            calls: list[ToolCall] = []
            for block in map(as_dict, as_list(obj["content"])):
                if block.get("type") == "text":
                    texts.append(str(block["text"]))
                elif block.get("type") == "tool_use":
                    calls.append(_tool_call(block))
            message = Message(
                role=str(obj.get("role") or "assistant"),
                content="".join(texts) if texts else None,
                tool_calls=tuple(calls),
            )
            return ChatCompletion(
                id=str(obj.get("id") or ""),
                model=str(obj.get("model") or ""),
                choices=(Choice(index=0, message=message, finish_reason=map_finish_reason(obj)),),
                usage=map_usage(obj.get("usage")),
                request_id=request_id,
                raw=obj,
            )

    def stream_parser(self, *, request_id: str | None = None) -> AnthropicStreamParser:
        """A parser for the Messages event stream."""
        return AnthropicStreamParser(request_id=request_id)


# --------------------------------------------------------------------------- requests


@contextmanager
def _caller_shape(what: str) -> Iterator[None]:
    """A KeyError/TypeError while mapping the caller's input is a ConfigError."""
    try:
        yield
    except LLMPoolError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"{what} cannot be mapped to the Anthropic API ({type(exc).__name__}: {exc})",
            key=what,
        ) from exc


def map_messages(
    messages: list[dict[str, Any]],
) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """``(system, messages)`` for the Messages API from OpenAI-style messages.

    System (and ``developer``) messages are lifted into ``system``: one
    string when they are all strings, else a list of text blocks. Assistant
    ``tool_calls`` become ``tool_use`` blocks, ``tool`` messages become
    ``tool_result`` blocks in a user turn, and consecutive turns of the same
    role are merged (the API wants user and assistant to alternate).
    """
    system: list[Any] = []
    out: list[dict[str, Any]] = []
    with _caller_shape("messages"):
        for message in messages:
            role = message["role"]
            if role in ("system", "developer"):
                system.append(message.get("content") or "")
                continue
            content: str | list[dict[str, Any]]
            if role == "tool":
                role, content = "user", [_tool_result(message)]
            elif role == "assistant":
                content = _assistant_content(message)
            elif role == "user":
                content = _user_content(message.get("content"))
            else:
                raise ConfigError(
                    f"message role {role!r} is not supported by the anthropic provider",
                    key="messages",
                    value=role,
                )
            _append_turn(out, role, content)
    return _system(system), out


def _system(parts: list[Any]) -> str | list[dict[str, Any]] | None:
    if not parts:
        return None
    if all(isinstance(p, str) for p in parts):
        return "\n\n".join(p for p in parts if p) or None
    blocks: list[dict[str, Any]] = []
    for part in parts:
        blocks.extend(_blocks(_user_content(part)))
    return blocks


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _append_turn(out: list[dict[str, Any]], role: str, content: Any) -> None:
    if out and out[-1]["role"] == role:
        out[-1]["content"] = _blocks(out[-1]["content"]) + _blocks(content)
    else:
        out.append({"role": role, "content": content})


def _user_content(content: Any) -> str | list[dict[str, Any]]:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return [_content_block(as_dict(part)) for part in as_list(content)]


def _content_block(part: dict[str, Any]) -> dict[str, Any]:
    """OpenAI content parts mapped; Anthropic-native blocks pass through."""
    if part.get("type") != "image_url":
        return dict(part)
    image = part["image_url"]
    url = str(image["url"] if isinstance(image, Mapping) else image)
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media_type = header.split(";")[0]
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_content(message: dict[str, Any]) -> str | list[dict[str, Any]]:
    content = _user_content(message.get("content"))
    calls = message.get("tool_calls") or []
    if not calls:
        return content
    blocks = _blocks(content)
    for call in calls:
        function = call["function"]
        arguments = function.get("arguments") or "{}"
        tool_input = json.loads(arguments) if isinstance(arguments, str) else arguments
        blocks.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": function["name"],
                "input": as_dict(tool_input),
            }
        )
    return blocks


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "tool_result",
        "tool_use_id": message["tool_call_id"],
        "content": _user_content(message.get("content")),
    }


def map_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI function tools as Anthropic tools; Anthropic-native tools pass through."""
    out = []
    with _caller_shape("tools"):
        for tool in tools:
            if tool.get("type") == "function" and "function" in tool:
                function = tool["function"]
                mapped = {"name": function["name"]}
                if function.get("description"):
                    mapped["description"] = function["description"]
                mapped["input_schema"] = function.get("parameters") or dict(_EMPTY_SCHEMA)
                out.append(mapped)
            else:
                out.append(dict(tool))
    return out


# --------------------------------------------------------------------------- responses


def map_finish_reason(obj: Mapping[str, Any]) -> str | None:
    """The OpenAI finish reason for the ``stop_reason`` in *obj*."""
    reason = opt_str(obj.get("stop_reason"))
    return FINISH_REASONS.get(reason, reason) if reason else None


def _tokens(usage: Mapping[str, Any], *names: str) -> int:
    return sum(opt_int(usage.get(name), 0) or 0 for name in names)


_INPUT = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def map_usage(value: Any, *, prompt_tokens: int | None = None) -> Usage:
    """OpenAI-style usage from Anthropic's: prompt tokens count the cached
    ones too (as OpenAI's do); *prompt_tokens* stands in when absent."""
    data = as_dict(value) if value is not None else {}
    prompt = _tokens(data, *_INPUT) if "input_tokens" in data else (prompt_tokens or 0)
    completion = _tokens(data, "output_tokens")
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def _tool_call(block: Mapping[str, Any]) -> ToolCall:
    return ToolCall(
        id=str(block["id"]),
        name=str(block["name"]),
        arguments=json.dumps(block.get("input") or {}, ensure_ascii=False),
    )


class AnthropicStreamParser(StreamParser):
    """Reads the Messages event stream up to ``message_stop``.

    Text deltas become chunks; ``tool_use`` blocks and their
    ``input_json_delta`` pieces become OpenAI-style ``tool_calls`` deltas
    (``index``, ``id``, ``function.name``, ``function.arguments``) so one
    assembler serves both providers; ``message_delta`` gives the finish
    reason and usage; ``ping`` and unknown events are ignored; an ``error``
    event raises StreamError. Confined to the thread reading the stream.
    """

    transient_errors: ClassVar[frozenset[str]] = frozenset(
        {"overloaded_error", "api_error", "rate_limit_error"}
    )

    def __init__(self, *, request_id: str | None = None) -> None:
        super().__init__(request_id=request_id)
        self._input_tokens = 0
        #: content block index -> tool call ordinal
        self._tools: dict[int, int] = {}

    def feed(self, event: SSEEvent) -> ChatChunk | None:
        """The chunk of one event, or None for bookkeeping events."""
        data = event.data
        if not data.strip():
            return None
        if event.event == "error":
            raise self.error_event(data)
        obj = self.load(data)
        kind = opt_text(obj.get("type")) or event.event
        if kind == "error":
            raise self.error_event(data, obj)
        try:
            return self._event(kind, obj)
        except SHAPE_ERRORS as exc:
            raise self.invalid(data, exc) from exc

    def _event(self, kind: str | None, obj: dict[str, Any]) -> ChatChunk | None:
        if kind == "content_block_delta":
            return self._delta(obj)
        if kind == "content_block_start":
            return self._block_start(obj)
        if kind == "message_start":
            message = as_dict(obj["message"])
            self.response_id = opt_text(message.get("id"))
            self.model = opt_text(message.get("model"))
            self._input_tokens = map_usage(message.get("usage")).prompt_tokens
        elif kind == "message_delta":
            delta = as_dict(obj.get("delta") or {})
            return self.chunk(
                finish_reason=map_finish_reason(delta),
                usage=map_usage(obj.get("usage"), prompt_tokens=self._input_tokens),
                raw=obj,
            )
        elif kind == "message_stop":
            self._done = True
        return None

    def _block_start(self, obj: dict[str, Any]) -> ChatChunk | None:
        block = as_dict(obj["content_block"])
        index = opt_int(obj.get("index"), 0) or 0
        if block.get("type") == "tool_use":
            ordinal = self._tools.setdefault(index, len(self._tools))
            call = {
                "index": ordinal,
                "id": str(block["id"]),
                "type": "function",
                "function": {"name": str(block["name"]), "arguments": ""},
            }
            return self.chunk(tool_calls=(call,), raw=obj)
        if block.get("type") == "text" and block.get("text"):
            return self.chunk(str(block["text"]), raw=obj)
        return None

    def _delta(self, obj: dict[str, Any]) -> ChatChunk | None:
        delta = as_dict(obj["delta"])
        kind = delta.get("type")
        if kind == "text_delta":
            return self.chunk(str(delta["text"]), raw=obj)
        if kind == "input_json_delta":
            index = opt_int(obj.get("index"), 0) or 0
            ordinal = self._tools.setdefault(index, len(self._tools))
            call = {"index": ordinal, "function": {"arguments": str(delta["partial_json"])}}
            return self.chunk(tool_calls=(call,), raw=obj)
        return None
