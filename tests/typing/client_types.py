"""Checked by mypy in the ``type`` env (never run): what editors learn from the overloads."""

from __future__ import annotations

from typing import assert_type

import llmpool
from llmpool.streaming import Stream


def chat_results(client: llmpool.Client, flag: bool) -> None:
    """chat() and complete() are typed by their stream argument."""
    messages = [{"role": "user", "content": "hi"}]
    assert_type(client.chat("m", messages), llmpool.ChatCompletion)
    assert_type(client.chat("m", messages, stream=False, temperature=0.2), llmpool.ChatCompletion)
    assert_type(client.chat("m", messages, stream=True, max_tokens=5), Stream)
    assert_type(client.chat("m", messages, stream=flag), llmpool.ChatCompletion | Stream)
    assert_type(client.complete("m", "once", top_p=0.9), llmpool.ChatCompletion)
    assert_type(client.complete("m", "once", stream=True, deadline=5.0), Stream)
    assert_type(client.embed("e", ["a"]), llmpool.Embeddings)
    assert_type(client.chat("m", messages).text, str)
    client.chat("m", messages, tool_choice="auto", seed=1, user="u", timeout=3.0)
    client.chat("m", messages, temprature=0.2)  # type: ignore[call-overload]
