"""Reading a provider's decoded JSON: every malformed body becomes InvalidResponse.

Public so that third-party providers report malformed bodies the way the
built-in ones do: :func:`load_json` for the bytes, :func:`response_shape`
(or :data:`SHAPE_ERRORS` and :func:`invalid_response`) around the reading
code, and the small checkers (:func:`as_dict`, :func:`opt_int`...) that raise
a plain TypeError for a wrong shape. Re-exported by
:mod:`llmpool.providers.base`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from llmpool.exceptions import InvalidResponse, LLMPoolError, excerpt
from llmpool.models import ToolCall, Usage

__all__ = [
    "NOT_JSON",
    "SHAPE_ERRORS",
    "as_dict",
    "as_list",
    "invalid_response",
    "load_json",
    "opt_int",
    "opt_str",
    "opt_text",
    "parse_tool_calls",
    "parse_usage",
    "response_shape",
]


def load_json(body: bytes | str, *, request_id: str | None, what: str = "response") -> Any:
    """Decode JSON *body*; InvalidResponse (with an excerpt) when it is not JSON."""
    try:
        if isinstance(body, bytes) and body[:1] == b"{" and body[1:2] not in (b"", b"\x00"):
            # What json.loads(bytes) would decide (no BOM, no NUL: UTF-8), without
            # its detect_encoding on every answer.
            return json.loads(body.decode("utf-8", "surrogatepass"))
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise invalid_response(body, request_id, what, exc, problem=NOT_JSON) from exc


#: The problem named when a body is not JSON at all.
NOT_JSON = "is not valid JSON"

#: What reading a decoded body of the wrong shape raises; mapped to InvalidResponse.
SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def invalid_response(
    body: bytes | str,
    request_id: str | None,
    what: str,
    exc: BaseException,
    *,
    problem: str = "has an unexpected shape",
) -> InvalidResponse:
    """The InvalidResponse for a *body* that *exc* found malformed (with an excerpt)."""
    return InvalidResponse(
        f"{what} {problem} ({type(exc).__name__}: {exc})",
        status_code=None,
        request_id=request_id,
        body=excerpt(body),
    )


@contextlib.contextmanager
def response_shape(body: bytes | str, request_id: str | None, what: str) -> Iterator[None]:
    """Turn a KeyError/TypeError/ValueError/... raised while reading a decoded
    body into InvalidResponse, so a wrong shape never escapes raw."""
    try:
        yield
    except LLMPoolError:
        raise
    except SHAPE_ERRORS as exc:
        raise invalid_response(body, request_id, what, exc) from exc


def as_dict(value: Any) -> dict[str, Any]:
    """*value* when it is a JSON object; TypeError otherwise."""
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def as_list(value: Any) -> list[Any]:
    """*value* when it is a JSON array; TypeError otherwise."""
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {type(value).__name__}")
    return value


def opt_str(value: Any) -> str | None:
    """*value* when it is a string or None; TypeError otherwise."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def opt_text(value: Any) -> str | None:
    """*value* when it is a non-empty string, else None (never raises)."""
    return value if isinstance(value, str) and value else None


def opt_int(value: Any, default: int | None = None) -> int | None:
    """*value* when it is an integer, *default* when None; TypeError otherwise."""
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def parse_tool_calls(value: Any) -> tuple[ToolCall, ...]:
    """OpenAI-style ``tool_calls`` (a list or None) as ToolCall values."""
    if value is None:
        return ()
    calls = []
    for item in as_list(value):
        call = as_dict(item)
        function = as_dict(call["function"])
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {})
        calls.append(
            ToolCall(
                id=str(call.get("id") or ""),
                name=str(function["name"]),
                arguments=arguments,
                type=str(call.get("type") or "function"),
            )
        )
    return tuple(calls)


def parse_usage(value: Any) -> Usage:
    """OpenAI-style usage (``prompt_tokens``, ``completion_tokens``, ``total_tokens``)."""
    if value is None:
        return Usage()
    usage = as_dict(value)
    prompt, completion, total = (
        usage.get("prompt_tokens"),
        usage.get("completion_tokens"),
        usage.get("total_tokens"),
    )
    if type(prompt) is int and type(completion) is int and type(total) is int:
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)
    prompt = opt_int(usage.get("prompt_tokens"), 0) or 0
    completion = opt_int(usage.get("completion_tokens"), 0) or 0
    total = opt_int(usage.get("total_tokens"), prompt + completion) or 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)
