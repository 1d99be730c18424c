"""The root of llmpool's error tree and the helpers every error uses (private).

Import errors from :mod:`llmpool.exceptions`, the one public module of the
tree, which re-exports everything here. This module imports nothing of
llmpool, so every part of the tree can build on it without a cycle.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BODY_EXCERPT_CHARS",
    "MAX_REQUEST_ID_CHARS",
    "LLMPoolError",
    "cap_request_id",
    "excerpt",
]

#: How much of a response body an error keeps (characters).
BODY_EXCERPT_CHARS = 500

#: The longest request id kept (characters): a server's id is quoted in
#: errors, logs and results, so a huge one is cut here.
MAX_REQUEST_ID_CHARS = 200


def cap_request_id(value: str | None) -> str | None:
    """*value* cut to :data:`MAX_REQUEST_ID_CHARS` characters (None stays None)."""
    if value is not None and len(value) > MAX_REQUEST_ID_CHARS:
        return value[:MAX_REQUEST_ID_CHARS]
    return value


def excerpt(body: bytes | str | None, limit: int = BODY_EXCERPT_CHARS) -> str:
    """Return a printable excerpt of *body*, at most *limit* characters."""
    if body is None:
        return ""
    if isinstance(body, bytes):
        body = body[: limit * 4].decode("utf-8", "replace")
    if len(body) > limit:
        return body[:limit] + "..."
    return body


class LLMPoolError(Exception):
    """The root of every error llmpool raises.

    Context is passed as keyword arguments and kept as attributes; the
    keywords survive pickling.
    """

    #: Whether retrying the same call may succeed. Subclasses override.
    retryable: bool = False

    def __init__(self, message: str = "", **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self._context = context
        for key, value in context.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # The state carries attributes set after construction (e.g. a stream
        # error's ``delivered``), so they survive pickling too.
        return (_rebuild, (type(self), self.message, self._context), dict(self.__dict__))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[LLMPoolError], message: str, context: dict[str, Any]) -> LLMPoolError:
    return cls(message, **context)
