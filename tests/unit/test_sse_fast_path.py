"""The decoder's one-event-per-piece fast path gives what the general path gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from llmpool import sse
from llmpool.sse import SSEDecoder, SSEEvent

LINES = [
    b"data: {}\n\n",
    b"data: x\n\n",
    b"data:  two\n\n",
    b"data: \xc3\xa9\n\n",
    b"data: a\n",
    b"data: b\r\n\r\n",
    b"id: 7\n",
    b"event: e\n",
    b"retry: 5\n",
    b": c\n",
    b"\n",
    b"\r",
    b"data: p",
    b"\xef\xbb\xbf",
    b"\xef\xbb\xbfdata: bom\n\n",
    b"data: [DONE]\n\n",
]


def _general(decoder: SSEDecoder, data: bytes) -> list[SSEEvent]:
    """What feed returns with the fast path's guard failing (a copy of feed
    without it: a piece ending with anything but a blank line skips it)."""
    if data.endswith(b"\n\n"):
        events = decoder.feed(data[:-1])
        return events + decoder.feed(b"\n")
    return decoder.feed(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=12))
def test_fast_path_matches_the_general_path(pieces: list[bytes]) -> None:
    fast, slow = SSEDecoder(), SSEDecoder()
    got = [event for piece in pieces for event in fast.feed(piece)]
    want = [event for piece in pieces for event in _general(slow, piece)]
    assert got == want
    assert fast.last_event_id == slow.last_event_id


def test_fast_event_is_an_ordinary_event() -> None:
    event = sse._event("x", "7")
    assert event == SSEEvent(data="x", id="7")
    assert (event.event, event.retry) == (None, None)
    assert hash(event) == hash(SSEEvent(data="x", id="7"))


def test_fast_path_keeps_the_line_limit() -> None:
    decoder = SSEDecoder(max_line_bytes=8)
    try:
        decoder.feed(b"data: 0123456789\n\n")
    except Exception as exc:  # the general path's InvalidResponse
        assert "longer than 8 bytes" in str(exc)
    else:
        raise AssertionError("a too-long event was accepted")


def test_text_chunk_is_an_ordinary_chunk() -> None:
    import attrs

    from llmpool.models import ChatChunk
    from llmpool.providers.stream_parser import text_chunk

    raw = {"id": "c"}
    chunk = text_chunk("hi", 1, "stop", raw)
    assert chunk == ChatChunk(delta="hi", index=1, finish_reason="stop", raw=raw)
    assert attrs.asdict(chunk) == attrs.asdict(
        ChatChunk(delta="hi", index=1, finish_reason="stop", raw=raw)
    )
    # Every field is set: a field added to ChatChunk must be added to text_chunk too.
    assert {f.name for f in attrs.fields(ChatChunk)} == {
        "delta",
        "index",
        "finish_reason",
        "usage",
        "tool_calls",
        "raw",
    }


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=12))
def test_feed_data_gives_what_feed_gives(pieces: list[bytes]) -> None:
    """feed_data's str for the common piece is the data of the event feed
    gives (default type, no retry), with the same last event ID."""
    plain, full = SSEDecoder(), SSEDecoder()
    for piece in pieces:
        got = plain.feed_data(piece)
        want = full.feed(piece)
        if isinstance(got, str):
            assert want == [SSEEvent(data=got, id=plain.last_event_id)]
        else:
            assert got == want
        assert plain.last_event_id == full.last_event_id


def test_feed_data_takes_the_common_piece_as_a_string() -> None:
    decoder = SSEDecoder()
    assert decoder.feed_data(b'data: {"a":1}\n\n') == [SSEEvent(data='{"a":1}')]
    assert decoder.feed_data(b"data: \xc3\xa9\n\n") == "\u00e9"
    assert decoder.feed_data(b"event: e\n") == []
    assert decoder.feed_data(b"data: x\n\n") == [SSEEvent(event="e", data="x")]
    assert decoder.feed_data(b"data: y\n\n") == "y"
    assert decoder.feed_data(b"data: a\ndata: b\n\n") == [SSEEvent(data="a\nb")]
    assert decoder.feed_data(b"data: half") == []
    assert decoder.feed_data(b"data: z\n\n") == [SSEEvent(data="halfdata: z")]
    decoder.flush()
    assert decoder.feed_data(b"data: w\n\n") == "w"


def test_the_first_piece_without_a_bom_opens_the_fast_path() -> None:
    """A stream whose first piece is one whole event takes the fast path from its
    first piece (the BOM check is done by it: it starts with ``data: ``), and a
    later piece starting with a BOM is still not stripped."""
    for feed_data in (False, True):
        decoder = SSEDecoder()
        feed = decoder.feed_data if feed_data else decoder.feed
        first = feed(b"data: a\n\n")
        assert first == [SSEEvent(data="a")]
        assert decoder._clean and decoder._started
        assert (feed(b"data: b\n\n") == "b") if feed_data else True
        assert feed(b"\xef\xbb\xbfdata: c\n\n") == []  # a BOM here starts a field name
