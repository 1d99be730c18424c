"""Server-sent events: an incremental decoder.

:class:`SSEDecoder` turns the bytes of a ``text/event-stream`` body, in
whatever pieces the socket delivers them, into :class:`SSEEvent` values,
following the WHATWG EventSource parsing rules. It is pure (no I/O) and sits
on the streaming hot path, so it splits lines with ``bytes`` methods and
decodes UTF-8 once per event, never byte by byte.

A decoder is confined to one stream (one thread); events are immutable.
"""

from __future__ import annotations

import attrs

from llmpool.exceptions import InvalidResponse, excerpt

__all__ = ["DEFAULT_MAX_LINE_BYTES", "SSEDecoder", "SSEEvent"]

#: The longest line (or event data) the decoder buffers before giving up: 1 MiB.
DEFAULT_MAX_LINE_BYTES = 1 << 20

_BOM = b"\xef\xbb\xbf"
_LINE_ENDS = (b"\n", b"\r")


@attrs.frozen(kw_only=True)
class SSEEvent:
    """One dispatched server-sent event. Immutable.

    ``event`` is None when the block named no (or an empty) event type, i.e.
    the default ``message`` type. ``id`` is the last event ID seen so far in
    the stream (it persists across events, as the spec says), None until one
    is set. ``retry`` is the reconnection time given in this event's block,
    if any.
    """

    event: str | None = None
    data: str = ""
    id: str | None = None
    retry: int | None = None


_new = object.__new__
# The slots' setters (a frozen class refuses setattr; its slots do not).
_set_event, _set_data, _set_id, _set_retry = (
    getattr(SSEEvent, name).__set__ for name in ("event", "data", "id", "retry")
)


def _event(data: str, last_id: str | None) -> SSEEvent:
    """``SSEEvent(data=data, id=last_id)``, built through its slots: the hot
    path's one event per piece, without the frozen ``__init__``'s setattr calls."""
    event = _new(SSEEvent)
    _set_event(event, None)
    _set_data(event, data)
    _set_id(event, last_id)
    _set_retry(event, None)
    return event


class SSEDecoder:
    """An incremental ``text/event-stream`` decoder.

    Feed it bytes as they arrive; each :meth:`feed` returns the events that a
    blank line completed. Lines may end with ``\\r\\n``, ``\\n`` or ``\\r`` (a
    ``\\r`` ending one piece and a ``\\n`` starting the next are one line end);
    a UTF-8 BOM at the very start is dropped; a multi-byte character split
    between pieces is decoded whole. Lines starting with ``:`` are comments;
    unknown fields are ignored; several ``data:`` lines join with ``\\n``; a
    block without any ``data:`` line dispatches nothing.

    At the end of the body call :meth:`flush`. Per the spec, an event that
    was not terminated by a blank line is incomplete and is discarded, so
    ``flush`` returns no events; a truncated stream then lacks its final
    marker and the caller reports it instead of trusting half an event.

    A line or an event's data longer than ``max_line_bytes`` raises
    :class:`~llmpool.exceptions.InvalidResponse`, which bounds the memory a
    misbehaving server can make the decoder hold. After raising, the decoder
    is spent.

    Not thread-safe: one decoder per stream, confined to the thread reading it.
    """

    __slots__ = (
        "_clean",
        "_data",
        "_data_len",
        "_event",
        "_id",
        "_max",
        "_pending",
        "_pending_len",
        "_retry",
        "_skip_lf",
        "_started",
    )

    def __init__(self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        #: Pieces of the line not yet terminated.
        self._pending: list[bytes] = []
        self._pending_len = 0
        #: The last piece ended with "\r": a "\n" starting the next belongs to it.
        self._skip_lf = False
        #: Whether the BOM check at the very start of the stream is done.
        self._started = False
        # The event being built.
        self._data: list[bytes] = []
        self._data_len = 0
        self._event: bytes = b""
        self._retry: int | None = None
        # The last event ID persists across events.
        self._id: str | None = None
        #: Nothing pending or half-built and the BOM check done: the fast paths
        #: may take a piece that is one whole event (set by the general path).
        self._clean = False

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Decode *data* (any piece of the body) and return the completed events."""
        if (
            self._clean
            and data[:6] == b"data: "
            and data[-2:] == b"\n\n"
            and data.count(b"\n") == 2
            and b"\r" not in data
            and len(data) <= self._max
        ):
            # The common piece: exactly one whole one-line event, nothing pending
            # or half-built (what the general path below makes of it, faster).
            return [_event(data[6:-2].decode("utf-8", "replace"), self._id)]
        return self._feed(data)

    def feed_data(self, data: bytes) -> str | list[SSEEvent]:
        """:meth:`feed` for a reader that takes an event's data alone: a piece
        that is exactly one whole one-line event of the default type (the
        common piece) gives its data as a ``str`` (the last event ID stays
        :attr:`last_event_id`), any other piece the list :meth:`feed` gives."""
        if (
            self._clean
            and data[:6] == b"data: "
            and data[-2:] == b"\n\n"
            and data.count(b"\n") == 2
            and b"\r" not in data
            and len(data) <= self._max
        ):
            return data[6:-2].decode("utf-8", "replace")
        return self._feed(data)

    def _feed(self, data: bytes) -> list[SSEEvent]:
        if not self._started and self._idle() and data[:6] == b"data: ":
            # The first piece, without a BOM: the check is done, and the fast
            # paths may take this piece and the next ones.
            self._started = self._clean = True
            return self.feed(data)
        # The general path; the fast paths' state check is redone at its end.
        self._clean = False
        events = self._decode(data)
        self._clean = self._started and self._idle()
        return events

    def _idle(self) -> bool:
        """Nothing pending or half-built (what the fast paths need, with the BOM check done)."""
        return (
            not self._pending
            and not self._data
            and not self._skip_lf
            and not self._event
            and self._retry is None
        )

    def _decode(self, data: bytes) -> list[SSEEvent]:
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
        if not data:
            return []
        if b"\n" not in data and b"\r" not in data:
            self._keep_partial(data)
            return []
        if self._pending:
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_len = 0
        if not self._started:
            data = self._strip_bom(data)
        lines = data.splitlines()
        if data.endswith(_LINE_ENDS):
            self._skip_lf = data[-1] == 0x0D
        else:
            self._keep_partial(lines.pop())
        if len(data) > self._max:
            self._check_lines(lines)
        return self._process(lines)

    def flush(self) -> list[SSEEvent]:
        """End of the body: discard an unterminated line and event.

        Always returns an empty list (see the class docstring for why).
        """
        self._pending.clear()
        self._pending_len = 0
        self._skip_lf = False
        self._reset_event()
        self._clean = self._started
        return []

    @property
    def last_event_id(self) -> str | None:
        """The last event ID the stream set, or None."""
        return self._id

    # ------------------------------------------------------------------ internals

    def _keep_partial(self, piece: bytes) -> None:
        if self._started:
            self._pending.append(piece)
            self._pending_len += len(piece)
        else:
            # Before the first line end the pending bytes are shorter than a
            # BOM, so this join is tiny.
            piece = self._strip_bom(b"".join(self._pending) + piece)
            self._pending[:] = [piece] if piece else []
            self._pending_len = len(piece)
        if self._pending_len > self._max:
            raise self._too_long(b"".join(self._pending), "line")

    def _strip_bom(self, data: bytes) -> bytes:
        if len(data) < len(_BOM) and _BOM.startswith(data):
            return data
        self._started = True
        return data[len(_BOM) :] if data.startswith(_BOM) else data

    def _check_lines(self, lines: list[bytes]) -> None:
        for line in lines:
            if len(line) > self._max:
                raise self._too_long(line, "line")

    def _too_long(self, sample: bytes, what: str) -> InvalidResponse:
        return InvalidResponse(
            f"server-sent event {what} longer than {self._max} bytes",
            status_code=None,
            request_id=None,
            body=excerpt(sample[:200]),
        )

    def _process(self, lines: list[bytes]) -> list[SSEEvent]:
        # The hot loop: one iteration per line, state in locals.
        events: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(self._dispatch(data))
                    data = self._data
                else:
                    self._event = b""
                    self._retry = None
                continue
            if line[0] == 0x3A:  # ":" starts a comment
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
                self._data_len += len(value) + 1
                if self._data_len > self._max:
                    raise self._too_long(value, "data")
            elif name == b"event":
                self._event = value
            elif name == b"id":
                if b"\x00" not in value:
                    self._id = value.decode("utf-8", "replace") or None
            elif name == b"retry" and value.isdigit():
                self._retry = int(value)
        return events

    def _dispatch(self, data: list[bytes]) -> SSEEvent:
        joined = data[0] if len(data) == 1 else b"\n".join(data)
        event = SSEEvent(
            event=self._event.decode("utf-8", "replace") if self._event else None,
            data=joined.decode("utf-8", "replace"),
            id=self._id,
            retry=self._retry,
        )
        self._reset_event()
        return event

    def _reset_event(self) -> None:
        self._data = []
        self._data_len = 0
        self._event = b""
        self._retry = None
