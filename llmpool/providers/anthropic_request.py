"""Anthropic requests: OpenAI-style messages, tools and call parameters
mapped to the Messages API (the tables are in the providers documentation).

Pure functions over values; thread-safe.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from llmpool.exceptions import ConfigError, LLMPoolError
from llmpool.params import CallParams
from llmpool.providers.parsing import as_dict, as_list
from llmpool.providers.payload import stop_list

__all__ = ["map_messages", "map_params", "map_tool_choice", "map_tools"]

_EMPTY_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}}


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


#: OpenAI tool_choice strings and their Anthropic form.
_TOOL_CHOICES = {"auto": "auto", "none": "none", "required": "any"}


def map_params(params: CallParams, payload: dict[str, Any]) -> None:
    """Add *params* to a Messages *payload*: ``temperature`` and ``top_p`` by
    name, ``stop`` as ``stop_sequences``, ``tools`` and ``tool_choice``
    mapped, ``user`` as ``metadata.user_id``. ``seed`` and
    ``response_format`` have no Messages equivalent: ConfigError (send what
    you mean through ``extra_body``)."""
    for name in ("seed", "response_format"):
        if getattr(params, name) is not None:
            raise ConfigError(f"{name} is not supported by the Anthropic Messages API", key=name)
    if params.temperature is not None:
        payload["temperature"] = params.temperature
    if params.top_p is not None:
        payload["top_p"] = params.top_p
    stops = stop_list(params.stop)
    if stops is not None:
        payload["stop_sequences"] = stops
    if params.tools is not None:
        payload["tools"] = map_tools(params.tools)
    if params.tool_choice is not None:
        payload["tool_choice"] = map_tool_choice(params.tool_choice)
    if params.user is not None:
        payload["metadata"] = {"user_id": params.user}


def map_tool_choice(choice: str | Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI ``tool_choice`` (``"auto"``, ``"none"``, ``"required"``, or
    ``{"type": "function", "function": {"name": ...}}``) in Anthropic's form;
    an Anthropic-native mapping passes through."""
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise ConfigError(
                f"tool_choice must be one of {sorted(_TOOL_CHOICES)} or a mapping, got {choice!r}",
                key="tool_choice",
            )
        return {"type": _TOOL_CHOICES[choice]}
    with _caller_shape("tool_choice"):
        if choice.get("type") == "function":
            return {"type": "tool", "name": choice["function"]["name"]}
        return dict(choice)


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
