"""The incremental SSE decoder: WHATWG parsing rules, any split, bounded buffers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmpool.exceptions import InvalidResponse
from llmpool.streaming import SSEDecoder, SSEEvent

OPENAI_STREAM = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":'
    b'"l\xc3\xb6 \xf0\x9f\x8c\x8d"}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)

ANTHROPIC_STREAM = (
    b"event: message_start\r\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":5}}}\r\n'
    b"\r\n"
    b"event: ping\r\n"
    b'data: {"type": "ping"}\r\n'
    b"\r\n"
    b"event: content_block_delta\r\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\r\n'
    b"\r\n"
    b"event: message_stop\r\n"
    b'data: {"type":"message_stop"}\r\n'
    b"\r\n"
)

MIXED_STREAM = (
    b"\xef\xbb\xbf: a comment\r"
    b"retry: 3000\n"
    b"id: 7\r\n"
    b"event: update\r"
    b"data: first line\n"
    b"data:second line\r\n"
    b"data:  two spaces\r"
    b"unknown: field\n"
    b"\r\n"
    b"data\n"
    b"\n"
    b"id\n"
    b"event: solo\n"
    b"\n"
    b"data: \xe6\x97\xa5\xe6\x9c\xac\r"
    b"\r"
    b"data: tail without blank line\n"
)


def decode_all(stream: bytes, pieces: list[int] | None = None) -> list[SSEEvent]:
    """Feed *stream* split at the given cut points, then flush."""
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    start = 0
    for cut in [*(pieces or []), len(stream)]:
        events.extend(decoder.feed(stream[start:cut]))
        start = cut
    events.extend(decoder.flush())
    return events


def test_openai_stream_with_done() -> None:
    """OpenAI's data-only stream, [DONE] included, decodes to one event per block."""
    events = decode_all(OPENAI_STREAM)
    assert len(events) == 5
    assert all(e.event is None for e in events)
    assert events[2].data.endswith('"l\u00f6 \U0001f30d"}}]}')
    assert events[-1] == SSEEvent(data="[DONE]")


def test_anthropic_event_stream_with_crlf() -> None:
    """Anthropic's named events over CRLF keep their event type."""
    events = decode_all(ANTHROPIC_STREAM)
    assert [e.event for e in events] == [
        "message_start",
        "ping",
        "content_block_delta",
        "message_stop",
    ]
    assert events[1].data == '{"type": "ping"}'


def test_mixed_line_ends_comments_fields_and_bom() -> None:
    """BOM, CR/LF/CRLF, comments, multi-line data, ids, retry and unknown fields."""
    events = decode_all(MIXED_STREAM)
    assert events == [
        SSEEvent(
            event="update",
            data="first line\nsecond line\n two spaces",
            id="7",
            retry=3000,
        ),
        SSEEvent(event=None, data="", id="7"),
        SSEEvent(event=None, data="\u65e5\u672c", id=None),
    ]


def test_block_without_data_dispatches_nothing() -> None:
    """An event block with no data line is not an event (the spec), and resets the type."""
    decoder = SSEDecoder()
    assert decoder.feed(b"event: ping\n\n") == []
    assert decoder.feed(b"data: x\n\n") == [SSEEvent(data="x")]


def test_only_one_leading_space_removed() -> None:
    """`field: value` loses one space; `field:value` loses none."""
    events = decode_all(b"data:a\n\ndata: b\n\ndata:  c\n\n")
    assert [e.data for e in events] == ["a", "b", " c"]


def test_colon_in_value_is_kept() -> None:
    """Only the first colon separates the field name from the value."""
    assert decode_all(b"data: a:b: c\n\n")[0].data == "a:b: c"


def test_comment_only_heartbeats_yield_nothing() -> None:
    """Keep-alive comments produce no events."""
    assert decode_all(b": ping\n\n: ping\n\n") == []


def test_id_persists_and_null_id_is_ignored() -> None:
    """The last event ID persists across events; an id with NUL is ignored; empty clears it."""
    events = decode_all(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\x003\ndata: c\n\nid:\ndata: d\n\n")
    assert [e.id for e in events] == ["1", "1", "1", None]


def test_retry_must_be_digits_and_is_per_event() -> None:
    """A non-numeric retry is ignored; retry belongs to the block that set it."""
    events = decode_all(b"retry: 1s\ndata: a\n\nretry: 50\ndata: b\n\ndata: c\n\n")
    assert [e.retry for e in events] == [None, 50, None]


def test_cr_then_lf_across_feeds_is_one_line_end() -> None:
    """A CR ending one feed and an LF starting the next make one line end, not two."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: b\r") == []
    assert decoder.feed(b"\r") == [SSEEvent(data="a\nb")]


def test_lone_cr_between_feeds_is_a_line_end() -> None:
    """A CR followed by anything else than LF still ends the line."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\rdata: b\r\r") == [SSEEvent(data="a"), SSEEvent(data="b")]


def test_empty_feeds_change_nothing() -> None:
    """Feeding b'' is harmless, even between a CR and its LF."""
    decoder = SSEDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n\n") == [SSEEvent(data="a")]


def test_split_multibyte_character() -> None:
    """A UTF-8 character split between feeds is decoded whole."""
    decoder = SSEDecoder()
    data = "data: \u00e9\U0001f600\n\n".encode()
    events = [e for b in data for e in decoder.feed(bytes([b]))]
    assert events == [SSEEvent(data="\u00e9\U0001f600")]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    """Invalid UTF-8 becomes U+FFFD, as the spec's decoder does."""
    assert decode_all(b"data: \xff\n\n")[0].data == "\ufffd"


def test_bom_split_across_feeds_and_only_at_start() -> None:
    """A BOM is stripped even when split; a BOM later in the stream is data."""
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef") == []
    assert decoder.feed(b"\xbb") == []
    assert decoder.feed(b"\xbfdata: a\n\n") == [SSEEvent(data="a")]
    assert decoder.feed(b"data: \xef\xbb\xbfb\n\n") == [SSEEvent(data="\ufeffb")]
    assert decode_all(b"\xef\xbb\xbf\xef\xbb\xbfdata: c\n\n") == []  # second BOM: field name


def test_flush_discards_unterminated_event() -> None:
    """An event without its blank line at the end of the body is discarded (spec)."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]\n") == []
    assert decoder.flush() == []
    assert decoder.feed(b"data: partial") == []
    assert decoder.flush() == []
    assert decoder.feed(b"data: next\n\n") == [SSEEvent(data="next")]


def test_line_longer_than_limit_raises_invalid_response() -> None:
    """A pending line past max_line_bytes raises InvalidResponse."""
    decoder = SSEDecoder(max_line_bytes=64)
    decoder.feed(b"data: " + b"x" * 50)
    with pytest.raises(InvalidResponse) as info:
        decoder.feed(b"x" * 50)
    assert "64" in str(info.value)
    assert info.value.body.startswith("data: xxx")


def test_complete_long_line_in_one_feed_raises() -> None:
    """A whole over-long line delivered in one piece is refused too."""
    with pytest.raises(InvalidResponse):
        SSEDecoder(max_line_bytes=64).feed(b"data: " + b"y" * 100 + b"\n\n")


def test_event_data_longer_than_limit_raises() -> None:
    """Many short data lines cannot build an unbounded event."""
    decoder = SSEDecoder(max_line_bytes=64)
    with pytest.raises(InvalidResponse):
        decoder.feed(b"data: 0123456789\n" * 10)


def test_lines_within_limit_pass() -> None:
    """Lines at the limit are fine."""
    line = b"data: " + b"z" * 58
    assert decode_all(line + b"\n\n")[0].data == "z" * 58
    assert SSEDecoder(max_line_bytes=64).feed(line + b"\n\n")[0].data == "z" * 58


@pytest.mark.parametrize("stream", [OPENAI_STREAM, ANTHROPIC_STREAM, MIXED_STREAM])
def test_every_two_way_split_decodes_the_same(stream: bytes) -> None:
    """Splitting the stream at any single byte boundary changes nothing."""
    whole = decode_all(stream)
    for cut in range(len(stream) + 1):
        assert decode_all(stream, [cut]) == whole, cut


@pytest.mark.parametrize("stream", [OPENAI_STREAM, ANTHROPIC_STREAM, MIXED_STREAM])
def test_byte_by_byte_decodes_the_same(stream: bytes) -> None:
    """Feeding one byte at a time gives the same events as one feed."""
    assert decode_all(stream, list(range(1, len(stream)))) == decode_all(stream)


@settings(max_examples=150, deadline=None)
@given(
    stream=st.sampled_from([OPENAI_STREAM, ANTHROPIC_STREAM, MIXED_STREAM]),
    cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=40),
)
def test_random_splits_decode_the_same(stream: bytes, cuts: list[int]) -> None:
    """Any set of split points gives the same events as one feed."""
    points = sorted({c % (len(stream) + 1) for c in cuts})
    assert decode_all(stream, points) == decode_all(stream)


_pieces = st.sampled_from(
    [
        *(b"data", b"event", b"id", b"retry", b":", b": ", b" ", b"x", b"42"),
        *(b"\r", b"\n", b"\r\n", b"\xc3\xa9", b"\xef\xbb\xbf", b"\xe2\x82", b"\xac", b"\x00"),
    ]
)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(_pieces, max_size=60), data=st.data())
def test_arbitrary_streams_split_anywhere(parts: list[bytes], data: st.DataObject) -> None:
    """For arbitrary SSE-like bytes, random splits decode as one feed does."""
    stream = b"".join(parts)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    assert decode_all(stream, sorted(set(cuts))) == decode_all(stream)


def reference_decode(stream: bytes) -> list[SSEEvent]:
    """A slow, literal transcription of the WHATWG rules, for comparison."""
    text = stream.decode("utf-8", "replace")
    text = text.removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)
    lines.pop()  # an unterminated last line is discarded at the end of the stream
    events: list[SSEEvent] = []
    data, event_type, last_id, retry = "", "", None, None
    for line in lines:
        if line == "":
            if data:
                events.append(
                    SSEEvent(event=event_type or None, data=data[:-1], id=last_id, retry=retry)
                )
            data, event_type, retry = "", "", None
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data += value + "\n"
        elif name == "event":
            event_type = value
        elif name == "id" and "\x00" not in value:
            last_id = value or None
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
    return events


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_pieces, max_size=60))
def test_matches_the_reference_rules(parts: list[bytes]) -> None:
    """The fast decoder agrees with a literal transcription of the spec."""
    stream = b"".join(parts)
    assert decode_all(stream) == reference_decode(stream)


@pytest.mark.parametrize("stream", [OPENAI_STREAM, ANTHROPIC_STREAM, MIXED_STREAM])
def test_fixtures_match_the_reference_rules(stream: bytes) -> None:
    """The fixture streams decode as the reference says."""
    assert decode_all(stream) == reference_decode(stream)
