"""The package's public face: version, exports, entry-point groups."""

from __future__ import annotations

import importlib.metadata
import logging

import llmpool


def test_version_matches_installed_metadata() -> None:
    """__version__ comes from one source and equals the installed metadata."""
    assert llmpool.__version__ == importlib.metadata.version("llmpool")


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted, names only real attributes, and lists every public re-export."""
    assert list(llmpool.__all__) == sorted(llmpool.__all__)
    for name in llmpool.__all__:
        assert hasattr(llmpool, name), name
    public = {
        name
        for name, value in vars(llmpool).items()
        if not name.startswith("_") and not isinstance(value, type(llmpool))
    }
    public.discard("annotations")
    assert public <= set(llmpool.__all__), public - set(llmpool.__all__)


def test_entry_point_groups_exist() -> None:
    """The providers and plugins groups are declared in the installed metadata."""
    eps = importlib.metadata.entry_points()
    providers = {ep.name for ep in eps.select(group="llmpool.providers")}
    plugins = {ep.name for ep in eps.select(group="llmpool.plugins")}
    assert {"openai", "anthropic"} <= providers
    assert {"logging", "metrics", "ratelimit", "cache", "usage"} <= plugins


def test_console_script_declared() -> None:
    """The `llmpool` command is a declared console script."""
    scripts = importlib.metadata.entry_points().select(group="console_scripts")
    assert any(ep.name == "llmpool" and ep.value == "llmpool.cli:main" for ep in scripts)


def test_package_logger_has_null_handler() -> None:
    """A library never configures logging: the package logger only has a NullHandler."""
    handlers = logging.getLogger("llmpool").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_py_typed_marker_is_installed() -> None:
    """Type checkers see llmpool as typed."""
    files = importlib.metadata.files("llmpool") or []
    assert any(str(f).endswith("llmpool/py.typed") for f in files) or (
        __import__("pathlib").Path(llmpool.__file__).with_name("py.typed").exists()
    )


def test_every_public_exception_is_exported_from_llmpool() -> None:
    """llmpool.__all__ holds every name of llmpool.exceptions.__all__, as the same objects."""
    import llmpool.exceptions as exc

    missing = set(exc.__all__) - set(llmpool.__all__)
    assert not missing, sorted(missing)
    for name in exc.__all__:
        assert getattr(llmpool, name) is getattr(exc, name), name


def test_call_params_is_exported_from_llmpool() -> None:
    """CallParams, the value carrying a call's generation parameters, is importable from llmpool."""
    from llmpool.params import CallParams

    assert "CallParams" in llmpool.__all__
    assert llmpool.CallParams is CallParams


def test_rate_limit_homonyms_say_which_is_which() -> None:
    """RateLimitError (HTTP 429) and RateLimitExceeded (the plugin's wait) each name the other."""
    assert "RateLimitExceeded" in (llmpool.RateLimitError.__doc__ or "")
    assert "429" in (llmpool.RateLimitError.__doc__ or "")
    assert "RateLimitError" in (llmpool.RateLimitExceeded.__doc__ or "")
    assert "ratelimit" in (llmpool.RateLimitExceeded.__doc__ or "")
