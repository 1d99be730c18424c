"""docs/configuration.rst documents every configuration key and its environment variable."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

import llmpool
from llmpool.config import ClientSettings, PluginsConfig
from llmpool.config_loading import ENV_VARS
from llmpool.endpoints.model import RoutingConfig
from llmpool.retry import RetryPolicy

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.rst"
SECTIONS = [
    ("client", ClientSettings),
    ("client.retry", RetryPolicy),
    ("connection_pool", llmpool.PoolConfig),
    ("memory", llmpool.MemoryConfig),
    ("plugins", PluginsConfig),
    ("state", llmpool.StateConfig),
    ("routing", RoutingConfig),
    ("routing.health", llmpool.HealthConfig),
    ("endpoints[]", llmpool.Endpoint),
]


@pytest.mark.parametrize(("section", "cls"), SECTIONS)
def test_every_key_is_documented(section: str, cls: type) -> None:
    """Each field of each section appears in the configuration page as section.field."""
    text = DOC.read_text()
    missing = [f.name for f in attrs.fields(cls) if f"``{section}.{f.name}``" not in text]
    assert not missing, f"undocumented keys in {section}: {missing}"


def test_every_environment_variable_is_documented() -> None:
    """Each LLMPOOL_* override is listed in the configuration page."""
    text = DOC.read_text()
    assert [var for var in ENV_VARS if f"``{var}``" not in text] == []
