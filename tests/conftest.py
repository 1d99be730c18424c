"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmpool.testing import MockLLMServer

# pytester runs a test file in a child pytest (the leak guard's own test).
pytest_plugins = ["pytester"]


@pytest.fixture
def mock_server() -> Iterator[MockLLMServer]:
    """A started MockLLMServer with default settings, stopped after the test."""
    with MockLLMServer() as server:
        yield server
