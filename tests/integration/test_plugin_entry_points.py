"""Real entry points through stevedore: the built-ins, the example package, broken plugins.

The example package (examples/plugin_package) is the pip-installed one, found
like any third-party plugin; tox installs it, and without it those tests skip
(``pip install ./examples/plugin_package``). The broken plugins are test-only
distributions no real package should ship: their modules and a minimal
``.dist-info`` are written into a temporary directory put on ``sys.path``. The
stevedore and importlib caches are cleared before and after, and every module
imported from that directory is forgotten.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import shutil
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import stevedore
from stevedore import NamedExtensionManager

from llmpool.exceptions import PluginLoadError
from llmpool.models import CallContext, Request
from llmpool.plugins import ENV_VAR, PluginManager, describe_installed, resolve_plugin_names

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin_package"
EXAMPLE_DISTRIBUTION = "llmpool-example-plugin"
TEST_NAMESPACE = "llmpool_tests.plugins"


def _clear_caches() -> None:
    stevedore.ExtensionManager.ENTRY_POINT_CACHE.clear()
    importlib.invalidate_caches()


class Site:
    """A temporary site directory that test-only distributions are written into."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def install(
        self,
        name: str,
        version: str,
        entry_points: Mapping[str, Mapping[str, str]],
        modules: Mapping[str, str],
    ) -> None:
        """Write *modules* (file name -> source) and a dist-info declaring *entry_points*."""
        for file_name, source in modules.items():
            (self.root / file_name).write_text(source)
        dist_info = self.root / f"{name.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        lines = []
        for group, points in entry_points.items():
            lines.append(f"[{group}]")
            lines.extend(f"{key} = {value}" for key, value in points.items())
        (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        (dist_info / "INSTALLER").write_text("llmpool-tests\n")
        record = [f"{file_name},," for file_name in modules]
        record += [f"{dist_info.name}/{f},," for f in ("METADATA", "entry_points.txt", "INSTALLER")]
        record.append(f"{dist_info.name}/RECORD,,")
        (dist_info / "RECORD").write_text("\n".join(record) + "\n")
        _clear_caches()


@contextlib.contextmanager
def temporary_site(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """A site directory on sys.path while the context lasts; forgotten afterwards."""
    root.mkdir()
    # keep stevedore from writing a cache file for this throw-away sys.path
    monkeypatch.setattr(stevedore._cache._c, "_disable_caching", True, raising=False)
    sys.path.append(str(root))
    _clear_caches()
    try:
        yield Site(root)
    finally:
        sys.path.remove(str(root))
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(str(root)):
                del sys.modules[name]
        shutil.rmtree(root, ignore_errors=True)
        _clear_caches()


@pytest.fixture
def example_package() -> importlib.metadata.Distribution:
    """The example plugin package's installed distribution; the test skips without it."""
    _clear_caches()
    try:
        return importlib.metadata.distribution(EXAMPLE_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            "examples/plugin_package is not installed (tox installs it): "
            "pip install ./examples/plugin_package"
        )


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """A site directory on sys.path for the duration of one test."""
    with temporary_site(tmp_path / "site", monkeypatch) as installed:
        yield installed


# --------------------------------------------------------------------------- built-ins


def test_builtins_load_through_their_entry_points_in_the_given_order() -> None:
    """The five built-ins are found by name through stevedore, like any plugin."""
    manager = PluginManager(strict=True)
    names = ["usage", "logging", "cache", "metrics", "ratelimit"]
    loaded = manager.load_entry_points(names, settings={"ratelimit": {"requests_per_minute": 600}})
    assert loaded == names
    stats = manager.stats()["plugins"]
    assert all(stats[n]["module"] == f"llmpool.plugins.builtin.{n}" for n in names)
    assert [p.name for p in manager.plugins] == [
        "cache",
        "ratelimit",
        "usage",
        "metrics",
        "logging",
    ]
    manager.close()


def test_no_names_loads_nothing_and_load_all_loads_everything() -> None:
    """names=None loads nothing; load_all=True loads every installed plugin."""
    manager = PluginManager()
    assert manager.load_entry_points(None) == []
    loaded = manager.load_entry_points(
        load_all=True, settings={"ratelimit": {"tokens_per_minute": 10_000}}
    )
    assert {"logging", "metrics", "ratelimit", "cache", "usage"} <= set(loaded)
    manager.close()


def test_unknown_name_is_a_recorded_failure() -> None:
    """A name with no entry point is reported, the others load."""
    manager = PluginManager()
    assert manager.load_entry_points(["nope", "usage"]) == ["usage"]
    (failure,) = manager.load_failures
    assert failure.name == "nope" and "no entry point" in failure.reason


def test_environment_variable_selects_what_loads() -> None:
    """LLMPOOL_PLUGINS overrides the configured names end to end."""
    names = resolve_plugin_names(["logging", "cache"], environ={ENV_VAR: "usage"})
    manager = PluginManager()
    assert manager.load_entry_points(names) == ["usage"]


# --------------------------------------------------------------------------- the example package


def test_example_package_is_discovered_by_name(
    example_package: importlib.metadata.Distribution,
) -> None:
    """The installed example package is found by stevedore through its entry point and works."""
    found = NamedExtensionManager("llmpool.plugins", ["example_headers"])
    assert found.names() == ["example_headers"]
    declared = example_package.entry_points.select(group="llmpool.plugins")
    assert found.extensions[0].entry_point.value == declared["example_headers"].value

    manager = PluginManager(strict=True)
    loaded = manager.load_entry_points(
        ["example_headers"], settings={"example_headers": {"headers": {"X-Team": "search"}}}
    )
    assert loaded == ["example_headers"]
    module_file = Path(sys.modules["llmpool_example_plugin"].__file__ or "")
    assert module_file.parent != EXAMPLE  # the installed copy, not the source tree's
    request = Request(method="POST", path="/chat/completions", headers={"A": "1"}, payload={})
    changed = manager.before_request(CallContext(operation="chat"), request)
    assert isinstance(changed, Request)
    assert changed.headers == {"A": "1", "X-Team": "search"}
    manager.after_response(CallContext(operation="chat"), changed, object())
    assert manager.stats()["plugins"]["example_headers"]["own"] == {"chat:ok": 1}


def test_example_package_is_listed_with_its_distribution(
    example_package: importlib.metadata.Distribution, monkeypatch: pytest.MonkeyPatch
) -> None:
    """describe_installed shows the example's distribution and version, importing on demand."""
    monkeypatch.delitem(sys.modules, "llmpool_example_plugin", raising=False)
    rows = {row["name"]: row for row in describe_installed(("llmpool.plugins",))}
    row = rows["example_headers"]
    assert row["distribution"] == EXAMPLE_DISTRIBUTION
    assert row["version"] == example_package.version
    assert "llmpool_example_plugin" not in sys.modules
    loaded = {r["name"]: r for r in describe_installed(("llmpool.plugins",), load=True)}
    assert loaded["example_headers"]["loaded"] is True


def test_a_removed_site_is_gone_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the temporary site is removed and caches cleared, its plugin is no longer found."""
    with temporary_site(tmp_path / "site", monkeypatch) as installed:
        installed.install(
            "llmpool-tests-good",
            "1.0",
            {TEST_NAMESPACE: {"good": "llmpool_tests_good:Good"}},
            {"llmpool_tests_good.py": GOOD},
        )
        assert "good" in {row["name"] for row in describe_installed((TEST_NAMESPACE,))}
    assert "good" not in {row["name"] for row in describe_installed((TEST_NAMESPACE,))}
    assert PluginManager().load_entry_points(["good"], TEST_NAMESPACE) == []


# --------------------------------------------------------------------------- broken plugins

GOOD = """
from llmpool.plugins import LLMPlugin

class Good(LLMPlugin):
    name = "good"

    def on_attempt(self, ctx, attempt):
        pass
"""

BROKEN = {
    "import_error": "import llmpool_no_such_dependency\n",
    "syntax_error": "def broken(:\n",
    "exits": "import sys\nsys.exit('plugin gave up')\n",
    "asserts": "assert False, 'at import'\n",
    "signature": textwrap.dedent(
        """
        from llmpool.plugins import LLMPlugin

        class Signature(LLMPlugin):
            name = "signature"

            def after_response(self, ctx, response):
                pass
        """
    ),
    "misspelt": textwrap.dedent(
        """
        from llmpool.plugins import LLMPlugin

        class Misspelt(LLMPlugin):
            name = "misspelt"

            def after_respones(self, ctx, request, response):
                pass
        """
    ),
    "future": textwrap.dedent(
        """
        from llmpool.plugins import LLMPlugin

        class Future(LLMPlugin):
            name = "future"
            api_version = "2.0"
        """
    ),
    "not_a_plugin": "class NotAPlugin:\n    pass\n",
}

EXPECTED = {
    "import_error": "ModuleNotFoundError",
    "syntax_error": "SyntaxError",
    "exits": "SystemExit: plugin gave up",
    "asserts": "AssertionError: at import",
    "signature": "after_response(self, ctx, request, response)",
    "misspelt": "'after_response'",
    "future": "targets plugin API 2.0",
    "not_a_plugin": "is not an LLMPlugin",
}


def _install_broken(site: Site) -> list[str]:
    modules = {f"llmpool_tests_{key}.py": source for key, source in BROKEN.items()}
    modules["llmpool_tests_good.py"] = GOOD
    points = {key: f"llmpool_tests_{key}:{_class(key)}" for key in BROKEN}
    points["good"] = "llmpool_tests_good:Good"
    site.install("llmpool-tests-broken", "1.0", {TEST_NAMESPACE: points}, modules)
    return [*BROKEN, "good"]


def _class(key: str) -> str:
    return {
        "signature": "Signature",
        "misspelt": "Misspelt",
        "future": "Future",
        "not_a_plugin": "NotAPlugin",
    }.get(key, "Plugin")


def test_every_broken_entry_point_is_a_failure_and_the_good_one_loads(site: Site) -> None:
    """Import, syntax, SystemExit, assert, signature, spelling and version errors are isolated."""
    names = _install_broken(site)
    manager = PluginManager()
    assert manager.load_entry_points(names, TEST_NAMESPACE) == ["good"]
    reasons = {f.name: f.reason for f in manager.load_failures}
    for key, expected in EXPECTED.items():
        assert expected in reasons[key], (key, reasons.get(key))
    assert all(f.source == f"entry_point:{TEST_NAMESPACE}" for f in manager.load_failures)


def test_strict_mode_raises_the_first_failure(site: Site) -> None:
    """strict=True raises PluginLoadError naming the plugin, the source and the reason."""
    _install_broken(site)
    with pytest.raises(PluginLoadError) as info:
        PluginManager(strict=True).load_entry_points(["exits", "good"], TEST_NAMESPACE)
    assert info.value.plugin == "exits"
    assert info.value.source == f"entry_point:{TEST_NAMESPACE}"
    assert "SystemExit" in info.value.reason


def test_describe_installed_reports_load_failures(site: Site) -> None:
    """The CLI listing with load=True gives each broken plugin's reason."""
    _install_broken(site)
    rows = {r["name"]: r for r in describe_installed((TEST_NAMESPACE,), load=True)}
    assert rows["good"]["loaded"] is True
    assert rows["good"]["distribution"] == "llmpool-tests-broken"
    assert "SystemExit" in rows["exits"]["error"] and rows["exits"]["loaded"] is False
    assert "'after_response'" in rows["misspelt"]["error"]
    assert "is not an LLMPlugin" in rows["not_a_plugin"]["error"]


def test_same_name_from_two_distributions_is_an_error(site: Site) -> None:
    """Two distributions declaring one name: neither loads, the failure names both targets."""
    for dist, target in (("one", "Good"), ("two", "Other")):
        module = f"llmpool_tests_dup_{dist}"
        source = GOOD.replace('name = "good"', "").replace("class Good", f"class {target}")
        site.install(
            f"llmpool-tests-{dist}",
            "1.0",
            {TEST_NAMESPACE: {"dup": f"{module}:{target}", f"only_{dist}": f"{module}:{target}"}},
            {f"{module}.py": source},
        )
    manager = PluginManager()
    assert manager.load_entry_points(["dup", "only_one"], TEST_NAMESPACE) == ["only_one"]
    (failure,) = manager.load_failures
    assert failure.name == "dup"
    assert "llmpool_tests_dup_one:Good" in failure.reason
    assert "llmpool_tests_dup_two:Other" in failure.reason
    everything = PluginManager()
    assert everything.load_entry_points(namespace=TEST_NAMESPACE, load_all=True) == [
        "only_one",
        "only_two",
    ]
    rows = [r for r in describe_installed((TEST_NAMESPACE,)) if r["name"] == "dup"]
    assert len(rows) == 2 and all(r["duplicate"] for r in rows)
