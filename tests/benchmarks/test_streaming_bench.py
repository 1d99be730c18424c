"""The SSE decoder and the providers' stream parsers on their own (no sockets).

Run: ``tox -e bench -- tests/benchmarks/test_streaming_bench.py``
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmpool.providers import load_provider
from llmpool.streaming import SSEDecoder

EVENTS = 2000


def _openai_stream() -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": None}],
    }
    line = b"data: " + json.dumps(chunk).encode() + b"\n\n"
    return line * EVENTS + b"data: [DONE]\n\n"


@pytest.mark.parametrize("piece", [64, 1024, 16384])
def test_sse_decoder(benchmark: Any, piece: int) -> None:
    """Decode 2,000 OpenAI-sized events fed in pieces of 64 B, 1 KiB or 16 KiB."""
    benchmark.group = "sse decoder (2,000 events)"
    body = _openai_stream()
    pieces = [body[i : i + piece] for i in range(0, len(body), piece)]

    def decode() -> int:
        decoder = SSEDecoder()
        return sum(len(decoder.feed(p)) for p in pieces)

    assert decode() == EVENTS + 1
    benchmark(decode)
    benchmark.extra_info["per_event_us"] = benchmark.stats.stats.median / (EVENTS + 1) * 1e6


def test_openai_stream_parser(benchmark: Any) -> None:
    """Decode and parse 2,000 events into ChatChunk values (no network)."""
    benchmark.group = "stream parser (2,000 events)"
    body = _openai_stream()
    provider = load_provider("openai", api_key="k")

    def parse() -> int:
        decoder = SSEDecoder()
        parser = provider.stream_parser()
        return sum(parser.feed(e) is not None for e in decoder.feed(body))

    assert parse() == EVENTS
    benchmark(parse)
    benchmark.extra_info["per_event_us"] = benchmark.stats.stats.median / EVENTS * 1e6
