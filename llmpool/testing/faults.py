"""Fault values for the mock server, and their compact text form.

A :class:`Fault` says how the mock server misbehaves for one request. It is a
frozen value built with a named constructor (``Fault.status(429,
retry_after=2)``, ``Fault.reset()``, ``Fault.stream_disconnect(after_chunks=2)``)
or parsed from its text form (``status=429,retry_after=2``, ``reset``,
``disconnect=2``), which the ``X-Mock-Fault`` request header and the
``llmpool mock-server`` command use. :func:`parse_fault` and
:func:`parse_faults` are the only parsers; ``str(fault)`` gives the canonical
text back, so ``Fault.parse(str(f)) == f``.

The text form is a comma-separated list of ``key`` or ``key=value`` items.
Exactly one item names the kind; the others modify it::

    status=CODE[,retry_after=S][,retry_after_ms=MS][,http_date][,delay=S][,message=TEXT]
    delay=S                          answer normally, S seconds late
    reset | drop | close_after_headers | close_after_response    [,delay=S]
    disconnect[=N] | truncate[=N] | malformed[=N] | stall[=N]    [,delay=S]
    stream_error[=N][,message=TEXT][,delay=S]
    oversized[=BYTES][,delay=S]

``message`` takes the rest of the item verbatim, commas and spaces included, so
it comes last.
Several faults are separated by ``;``.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import attrs

from llmpool.exceptions import ConfigError

__all__ = ["Fault", "FaultKind", "parse_fault", "parse_faults"]

#: Default for the stream faults' ``after_chunks``.
DEFAULT_AFTER_CHUNKS = 1
#: Default padding of an oversized body, in bytes.
DEFAULT_OVERSIZE = 1024 * 1024


class FaultKind(enum.Enum):
    """What a :class:`Fault` does; the value is its keyword in the text form."""

    STATUS = "status"
    DELAY = "delay"
    RESET = "reset"
    DROP = "drop"
    CLOSE_AFTER_HEADERS = "close_after_headers"
    CLOSE_AFTER_RESPONSE = "close_after_response"
    DISCONNECT = "disconnect"
    TRUNCATE = "truncate"
    MALFORMED = "malformed"
    STALL = "stall"
    STREAM_ERROR = "stream_error"
    OVERSIZED = "oversized"


#: Kinds whose text form takes ``=N`` chunks.
CHUNK_KINDS = frozenset(
    {
        FaultKind.DISCONNECT,
        FaultKind.TRUNCATE,
        FaultKind.MALFORMED,
        FaultKind.STALL,
        FaultKind.STREAM_ERROR,
    }
)
_FLAG_KINDS = frozenset(
    {
        FaultKind.RESET,
        FaultKind.DROP,
        FaultKind.CLOSE_AFTER_HEADERS,
        FaultKind.CLOSE_AFTER_RESPONSE,
    }
)


def _invalid(message: str, value: Any = None) -> ConfigError:
    return ConfigError(message, key="fault", value=value)


def _number(text: str, key: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _invalid(f"fault {key} must be a number, got {text!r}", text) from None
    if not math.isfinite(value) or value < 0:
        raise _invalid(f"fault {key} must be a number >= 0, got {text!r}", text)
    return value


def _integer(text: str, key: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _invalid(f"fault {key} must be an integer, got {text!r}", text) from None
    if value < 0:
        raise _invalid(f"fault {key} must be an integer >= 0, got {text!r}", text)
    return value


def _fmt(value: float) -> str:
    """Shortest text that parses back to *value*."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@attrs.frozen(kw_only=True)
class Fault:
    """One way the mock server misbehaves for one request. Immutable; share freely.

    Build one with a named constructor rather than directly. Every fault can
    carry ``delay_seconds``, a pause before the fault acts (before the
    response headers). Stream faults count ``after_chunks`` in content
    deltas (pieces of text or of tool arguments): the stream's preamble
    (OpenAI's role chunk; Anthropic's ``message_start``,
    ``content_block_start`` and ``ping``) is always sent first.
    """

    kind: FaultKind
    #: STATUS: the HTTP status (400..599).
    status_code: int | None = None
    #: STATUS: ``Retry-After`` in seconds (or as an HTTP date with ``http_date``).
    retry_after: float | None = None
    #: STATUS: ``retry-after-ms`` in milliseconds.
    retry_after_ms: int | None = None
    #: STATUS: write ``Retry-After`` as an HTTP date ``retry_after`` seconds ahead.
    http_date: bool = False
    #: STATUS, STREAM_ERROR: the error message (a default otherwise).
    message: str | None = None
    #: Any kind: seconds to wait before acting (DELAY: then answer normally).
    delay_seconds: float = 0.0
    #: Stream faults: content deltas sent before the fault acts.
    after_chunks: int = 0
    #: OVERSIZED: bytes of padding added to the JSON body.
    size: int = 0

    def __attrs_post_init__(self) -> None:
        if self.kind is FaultKind.STATUS:
            if self.status_code is None or not 400 <= self.status_code <= 599:
                raise _invalid(f"fault status must be 400..599, got {self.status_code!r}")
        elif self.status_code is not None or self.http_date or self.retry_after is not None:
            raise _invalid(f"{self.kind.value} takes no status or retry_after", self.kind.value)
        elif self.retry_after_ms is not None:
            raise _invalid(f"{self.kind.value} takes no retry_after_ms", self.kind.value)
        if self.http_date and self.retry_after is None:
            raise _invalid("http_date needs retry_after")
        if self.message is not None and self.kind not in (
            FaultKind.STATUS,
            FaultKind.STREAM_ERROR,
        ):
            raise _invalid(f"{self.kind.value} takes no message", self.message)
        if self.delay_seconds < 0 or self.after_chunks < 0 or self.size < 0:
            raise _invalid("fault delay, after_chunks and size must be >= 0")

    # ------------------------------------------------------------------ constructors

    @classmethod
    def status(
        cls,
        code: int,
        *,
        retry_after: float | None = None,
        retry_after_ms: int | None = None,
        http_date: bool = False,
        message: str | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Answer with HTTP *code* and a provider-shaped error body.

        ``retry_after`` sets ``Retry-After`` (seconds; an HTTP date that many
        seconds ahead with ``http_date=True``); ``retry_after_ms`` sets
        ``retry-after-ms``. Text: ``status=429,retry_after=2``.
        """
        return cls(
            kind=FaultKind.STATUS,
            status_code=code,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
            http_date=http_date,
            message=message,
            delay_seconds=delay,
        )

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait *seconds* before the response headers, then answer normally. Text: ``delay=S``."""
        return cls(kind=FaultKind.DELAY, delay_seconds=seconds)

    @classmethod
    def reset(cls, *, delay: float = 0.0) -> Fault:
        """Read the request, then reset the connection (RST) before any response byte."""
        return cls(kind=FaultKind.RESET, delay_seconds=delay)

    @classmethod
    def drop(cls, *, delay: float = 0.0) -> Fault:
        """Read the request, then close the connection (FIN) without a response byte.

        This is what a client sees when the server closed an idle keep-alive
        connection just as the request went out (``RemoteDisconnected``).
        """
        return cls(kind=FaultKind.DROP, delay_seconds=delay)

    @classmethod
    def close_after_headers(cls, *, delay: float = 0.0) -> Fault:
        """Send the response headers (a body promised), then close the connection."""
        return cls(kind=FaultKind.CLOSE_AFTER_HEADERS, delay_seconds=delay)

    @classmethod
    def close_after_response(cls, *, delay: float = 0.0) -> Fault:
        """Answer normally, then close the connection without ``Connection: close``."""
        return cls(kind=FaultKind.CLOSE_AFTER_RESPONSE, delay_seconds=delay)

    @classmethod
    def stream_disconnect(
        cls, after_chunks: int = DEFAULT_AFTER_CHUNKS, *, delay: float = 0.0
    ) -> Fault:
        """Send *after_chunks* content deltas, then close abruptly (no chunked terminator).

        A non-streaming answer sends its headers and half its body instead.
        Text: ``disconnect=N``.
        """
        return cls(kind=FaultKind.DISCONNECT, after_chunks=after_chunks, delay_seconds=delay)

    @classmethod
    def stream_truncate(
        cls, after_chunks: int = DEFAULT_AFTER_CHUNKS, *, delay: float = 0.0
    ) -> Fault:
        """End the stream cleanly after *after_chunks* deltas, without a finish marker.

        No finish reason, no ``[DONE]`` or ``message_stop``, but a proper
        chunked terminator. A non-streaming answer has a null
        ``finish_reason`` / ``stop_reason``. Text: ``truncate=N``.
        """
        return cls(kind=FaultKind.TRUNCATE, after_chunks=after_chunks, delay_seconds=delay)

    @classmethod
    def malformed_chunk(
        cls, after_chunks: int = DEFAULT_AFTER_CHUNKS, *, delay: float = 0.0
    ) -> Fault:
        """Insert a data line of invalid JSON after *after_chunks* deltas; the stream goes on.

        A non-streaming answer sends half its JSON body (a complete HTTP
        message that is not JSON). Text: ``malformed=N``.
        """
        return cls(kind=FaultKind.MALFORMED, after_chunks=after_chunks, delay_seconds=delay)

    @classmethod
    def stall(cls, after_chunks: int = DEFAULT_AFTER_CHUNKS, *, delay: float = 0.0) -> Fault:
        """Send *after_chunks* deltas, then go silent until the client leaves or the server stops.

        A non-streaming answer stalls after its headers and half its body.
        Text: ``stall=N``.
        """
        return cls(kind=FaultKind.STALL, after_chunks=after_chunks, delay_seconds=delay)

    @classmethod
    def stream_error(
        cls,
        after_chunks: int = DEFAULT_AFTER_CHUNKS,
        *,
        message: str | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Send an error event inside the 200 stream after *after_chunks* deltas, then end it.

        Anthropic: ``event: error`` with ``overloaded_error``; OpenAI:
        ``data: {"error": {...}}``. A non-streaming answer is a 200 whose body
        is the provider's error object. Text: ``stream_error=N``.
        """
        return cls(
            kind=FaultKind.STREAM_ERROR,
            after_chunks=after_chunks,
            message=message,
            delay_seconds=delay,
        )

    @classmethod
    def oversized(cls, size: int = DEFAULT_OVERSIZE, *, delay: float = 0.0) -> Fault:
        """Add *size* bytes of padding (a valid JSON string field) to the body.

        A stream carries the padding in its first event. Text: ``oversized=BYTES``.
        """
        return cls(kind=FaultKind.OVERSIZED, size=size, delay_seconds=delay)

    # ------------------------------------------------------------------ text form

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Parse one fault's text form (see the module docstring)."""
        return parse_fault(text)

    @property
    def spec(self) -> str:
        """The canonical text form; :func:`parse_fault` reads it back."""
        items = [self._kind_item()]
        if self.retry_after is not None:
            items.append(f"retry_after={_fmt(self.retry_after)}")
        if self.retry_after_ms is not None:
            items.append(f"retry_after_ms={self.retry_after_ms}")
        if self.http_date:
            items.append("http_date")
        if self.delay_seconds and self.kind is not FaultKind.DELAY:
            items.append(f"delay={_fmt(self.delay_seconds)}")
        if self.message is not None:
            items.append(f"message={self.message}")
        return ",".join(items)

    def _kind_item(self) -> str:
        name = self.kind.value
        if self.kind is FaultKind.STATUS:
            return f"{name}={self.status_code}"
        if self.kind is FaultKind.DELAY:
            return f"{name}={_fmt(self.delay_seconds)}"
        if self.kind in CHUNK_KINDS:
            return f"{name}={self.after_chunks}"
        if self.kind is FaultKind.OVERSIZED:
            return f"{name}={self.size}"
        return name

    def __str__(self) -> str:
        return self.spec


_KINDS = {kind.value: kind for kind in FaultKind}


def _split_items(text: str) -> tuple[list[tuple[str, str | None]], str | None]:
    """Split ``a=1,b,message=x, y`` into key/value items and the trailing message."""
    message = None
    head, sep, rest = text.partition("message=")
    if sep:
        if head and not head.endswith(","):
            raise _invalid(f"bad fault item before message= in {text!r}", text)
        text, message = head.rstrip(","), rest
    items: list[tuple[str, str | None]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        items.append((key.strip().lower(), value.strip() if eq else None))
    return items, message


def _kind_of(keys: list[str], text: str) -> FaultKind:
    named = [_KINDS[key] for key in keys if key in _KINDS and key != "delay"]
    if len(named) > 1:
        raise _invalid(f"fault {text!r} names more than one kind", text)
    if named:
        return named[0]
    if "delay" in keys:
        return FaultKind.DELAY
    raise _invalid(f"fault {text!r} names no kind (status=, reset, disconnect=, ...)", text)


def parse_fault(text: str) -> Fault:
    """Parse one fault's text form, e.g. ``status=429,retry_after=2``.

    Raises :class:`~llmpool.exceptions.ConfigError` on a bad spec.
    """
    items, message = _split_items(text.lstrip())
    kind = _kind_of([key for key, _ in items], text)
    fields: dict[str, Any] = {"kind": kind, "message": message}
    for key, value in items:
        _apply_item(fields, kind, key, value, text)
    try:
        return Fault(**fields)
    except TypeError as exc:  # pragma: no cover - fields are built above
        raise _invalid(f"bad fault {text!r}: {exc}", text) from None


def _need(value: str | None, key: str) -> str:
    if value is None or value == "":
        raise _invalid(f"fault {key} needs a value ({key}=...)", key)
    return value


def _apply_item(
    fields: dict[str, Any], kind: FaultKind, key: str, value: str | None, text: str
) -> None:
    if key == "status":
        fields["status_code"] = _integer(_need(value, key), key)
    elif key == "delay":
        fields["delay_seconds"] = _number(_need(value, key), key)
    elif key in ("retry_after", "retry_after_ms"):
        field = "retry_after" if key == "retry_after" else "retry_after_ms"
        parse = _number if key == "retry_after" else _integer
        fields[field] = parse(_need(value, key), key)
    elif key == "http_date":
        fields["http_date"] = True
    elif key == kind.value and kind in CHUNK_KINDS:
        fields["after_chunks"] = DEFAULT_AFTER_CHUNKS if value is None else _integer(value, key)
    elif key == kind.value and kind is FaultKind.OVERSIZED:
        fields["size"] = DEFAULT_OVERSIZE if value is None else _integer(value, key)
    elif key == kind.value and kind in _FLAG_KINDS and value is None:
        pass
    else:
        raise _invalid(f"unknown fault item {key!r} in {text!r}", text)


def parse_faults(text: str) -> tuple[Fault, ...]:
    """Parse ``;``-separated faults, e.g. ``status=503;reset;disconnect=2``."""
    return tuple(parse_fault(part) for part in text.split(";") if part.strip())
