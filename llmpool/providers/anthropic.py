"""The Anthropic Messages dialect, behind the same OpenAI-style call shape.

Callers pass OpenAI-style messages and tools; this module maps them to the
Messages API and maps the answers back (see the providers documentation for
the tables): system messages become the top-level ``system``, tool calls
become ``tool_use``/``tool_result`` blocks, ``stop_reason`` becomes an
OpenAI ``finish_reason``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from llmpool.exceptions import ConfigError
from llmpool.models import ChatChunk, ChatCompletion, Choice, Message, Request, ToolCall, Usage
from llmpool.params import NO_PARAMS, CallParams
from llmpool.providers.anthropic_request import map_messages, map_params, map_tools
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
    base_url_env: ClassVar[str | None] = "ANTHROPIC_BASE_URL"
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

    def api_path(self, path: str) -> str:
        """The Anthropic SDK's base URL has no ``/v1`` (``https://api.anthropic.com``);
        llmpool's has it. Both work: ``/v1`` is added when the path lacks it."""
        return path if path.endswith("/v1") else path + "/v1"

    def build_chat(
        self,
        model: str,
        messages: Sequence[MessageLike],
        *,
        stream: bool = False,
        params: CallParams = NO_PARAMS,
    ) -> Request:
        """``POST /messages`` with OpenAI-style *messages* and *params* mapped
        (:func:`map_params`)."""
        system, mapped = map_messages(normalise_messages(messages))
        payload: dict[str, Any] = {
            "model": check_model(model),
            "max_tokens": self._default_max_tokens
            if params.max_tokens is None
            else params.max_tokens,
            "messages": mapped,
        }
        if system is not None:
            payload["system"] = system
        if stream:
            payload["stream"] = True
        if params is not NO_PARAMS:
            map_params(params, payload)
        return self.post("/messages", with_extra(payload, params.extra_body), stream=stream)

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
