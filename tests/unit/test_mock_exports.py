"""llmpool.testing's public face."""

from __future__ import annotations

import pytest

import llmpool.testing
from llmpool.exceptions import ConfigError
from llmpool.testing import MockLLMServer


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted, names real attributes, and lists every public name."""
    names = llmpool.testing.__all__
    assert list(names) == sorted(names)
    assert all(hasattr(llmpool.testing, name) for name in names)
    public = {
        name
        for name, value in vars(llmpool.testing).items()
        if not name.startswith("_") and not isinstance(value, type(llmpool))
    }
    public.discard("annotations")
    assert public <= set(names), public - set(names)


def test_configure_validates_without_a_socket() -> None:
    """configure() returns the new settings, and rejects unknown names and bad values."""
    server = MockLLMServer()
    assert server.configure(reply="x", latency=0.5).reply == "x"
    assert server.settings.latency == 0.5
    with pytest.raises(ConfigError, match="unknown mock server setting"):
        server.configure(replies="x")
    with pytest.raises(ConfigError):
        server.configure(latency=-1)
    assert server.settings.reply == "x"


def test_inject_accepts_text_and_counts() -> None:
    """inject() queues parsed text, count times, after what is queued."""
    server = MockLLMServer()
    server.inject(llmpool.testing.Fault.reset())
    server.inject("status=500;drop", count=2)
    assert [str(f) for f in server.pending_faults] == [
        "reset",
        "status=500",
        "drop",
        "status=500",
        "drop",
    ]
    server.clear_faults()
    assert server.pending_faults == ()


def test_address_needs_a_start() -> None:
    """Before start() the port is unknown, and the repr says so."""
    server = MockLLMServer()
    assert "not started" in repr(server)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
