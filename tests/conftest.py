"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmpool.testing import MockLLMServer


@pytest.fixture
def mock_server() -> Iterator[MockLLMServer]:
    """A started MockLLMServer with default settings, stopped after the test."""
    with MockLLMServer() as server:
        yield server
