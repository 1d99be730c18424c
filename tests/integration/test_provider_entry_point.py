"""A third party adds a provider by declaring an entry point, nothing else.

The test writes a provider module and a ``.dist-info`` directory with an
``entry_points.txt`` into a temporary directory, puts it on ``sys.path`` and
loads the provider by name. No network, no pip. sys.path, sys.modules and
the entry-point caches are restored afterwards so nothing leaks.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import stevedore
import stevedore._cache

from llmpool import exceptions as exc
from llmpool.providers import Provider, available_providers, load_provider
from llmpool.streaming import SSEDecoder

MODULE = "llmpool_acme_provider_fixture"
BROKEN = "llmpool_broken_provider_fixture"

PROVIDER_SOURCE = textwrap.dedent(
    '''
    """Acme's provider: the OpenAI dialect with its own auth header."""
    from llmpool.providers.openai import OpenAIProvider


    class AcmeProvider(OpenAIProvider):
        name = "acme"
        default_base_url = "https://llm.acme.test/v1"

        def __init__(self, *, region="eu", **kwargs):
            self.region = region
            super().__init__(**kwargs)

        def static_headers(self):
            headers = super().static_headers()
            token = headers.pop("Authorization", None)
            if token:
                headers["X-Acme-Key"] = token.removeprefix("Bearer ")
            headers["X-Acme-Region"] = self.region
            return headers


    class NotAProvider:
        def __init__(self, **kwargs):
            pass
    '''
)

ENTRY_POINTS = f"""\
[llmpool.providers]
acme = {MODULE}:AcmeProvider
acme-broken = {BROKEN}:Provider
acme-wrong = {MODULE}:NotAProvider
"""


def _clear_caches() -> None:
    stevedore.ExtensionManager.ENTRY_POINT_CACHE.clear()
    importlib.invalidate_caches()


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution declaring three providers, importable from a temp dir."""
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{MODULE}.py").write_text(PROVIDER_SOURCE)
    (site / f"{BROKEN}.py").write_text("raise ImportError('acme needs libfoo')\n")
    dist = site / "acme_llm-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-llm\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    # stevedore keeps an on-disk entry-point cache; keep this test's out of ~/.cache.
    monkeypatch.setattr(stevedore._cache._c, "_dir", str(tmp_path / "cache"))
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    sys.path.insert(0, str(site))
    _clear_caches()
    try:
        yield site
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            if name.startswith((MODULE, BROKEN)):
                del sys.modules[name]
        _clear_caches()


def test_entry_point_alone_registers_a_provider(third_party: Path) -> None:
    """A provider declared only by entry point loads by name, with its options."""
    assert "acme" in available_providers()
    provider = load_provider("acme", api_key="acme-secret", region="us")
    assert isinstance(provider, Provider)
    assert type(provider).__module__ == MODULE
    headers = provider.headers()
    assert headers["X-Acme-Key"] == "acme-secret"
    assert headers["X-Acme-Region"] == "us"
    assert "Authorization" not in headers
    assert "acme-secret" not in repr(provider)
    request = provider.build_chat("acme-1", [{"role": "user", "content": "hi"}], stream=True)
    assert request.path == "/chat/completions"
    parser = provider.stream_parser()
    events = SSEDecoder().feed(
        b'data: {"choices":[{"delta":{"content":"ok"}}]}\n\ndata: [DONE]\n\n'
    )
    chunks = [parser.feed(e) for e in events]
    assert chunks[0] is not None and chunks[0].delta == "ok"
    assert parser.done


def test_listing_does_not_import_providers(third_party: Path) -> None:
    """Names are read from metadata: a provider that cannot import is listed, not imported."""
    names = available_providers()
    assert {"acme", "acme-broken", "acme-wrong", "openai", "anthropic"} <= set(names)
    assert MODULE not in sys.modules
    assert BROKEN not in sys.modules


def test_unknown_name_lists_third_party_names(third_party: Path) -> None:
    """The unknown-provider error lists the third-party names too."""
    with pytest.raises(exc.ConfigError) as info:
        load_provider("acme2")
    assert "acme-broken" in str(info.value) and "openai" in str(info.value)


def test_import_failure_is_a_config_error_with_the_cause(third_party: Path) -> None:
    """A provider whose import fails raises ConfigError with the ImportError chained."""
    with pytest.raises(exc.ConfigError) as info:
        load_provider("acme-broken")
    assert "libfoo" in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)


def test_entry_point_that_is_not_a_provider(third_party: Path) -> None:
    """An entry point naming something else than a Provider is refused."""
    with pytest.raises(exc.ConfigError, match="not an llmpool Provider"):
        load_provider("acme-wrong")


def test_nothing_leaked_from_other_tests() -> None:
    """Without the fixture, the third-party provider is gone again."""
    _clear_caches()
    assert "acme" not in available_providers()
    assert MODULE not in sys.modules
    with pytest.raises(exc.ConfigError):
        load_provider("acme")
