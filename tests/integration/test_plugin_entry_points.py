"""Real entry points through stevedore: the built-ins, the example package, broken plugins.

Distributions are "installed" by writing their modules and a ``.dist-info``
(METADATA, entry_points.txt, RECORD) into a temporary directory put on
``sys.path``: no network, no build backend, nothing left behind. The
stevedore and importlib caches are cleared before and after, and every
module imported from the directory is forgotten.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib
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
TEST_NAMESPACE = "llmpool_tests.plugins"


def _clear_caches() -> None:
    stevedore.ExtensionManager.ENTRY_POINT_CACHE.clear()
    importlib.invalidate_caches()


class Site:
    """A temporary site directory that distributions are installed into."""

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

    def install_example(self) -> None:
        """Install examples/plugin_package as its setup.cfg describes it."""
        config = configparser.ConfigParser()
        config.read(EXAMPLE / "setup.cfg")
        groups = {
            group: dict(
                line.split("=", 1)
                for line in config["options.entry_points"][group].split("\n")
                if line
            )
            for group in config["options.entry_points"]
        }
        groups = {g: {k.strip(): v.strip() for k, v in eps.items()} for g, eps in groups.items()}
        modules = {
            f"{module}.py": (EXAMPLE / f"{module}.py").read_text()
            for module in config["options"]["py_modules"].split()
        }
        self.install(config["metadata"]["name"], config["metadata"]["version"], groups, modules)


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


def test_example_package_is_discovered_by_name(site: Site) -> None:
    """The example package, once installed, is found by stevedore and works."""
    assert "example_headers" not in {row["name"] for row in describe_installed()}
    site.install_example()
    found = NamedExtensionManager("llmpool.plugins", ["example_headers"])
    assert found.names() == ["example_headers"]

    manager = PluginManager(strict=True)
    loaded = manager.load_entry_points(
        ["example_headers"], settings={"example_headers": {"headers": {"X-Team": "search"}}}
    )
    assert loaded == ["example_headers"]
    request = Request(method="POST", path="/chat/completions", headers={"A": "1"}, payload={})
    changed = manager.before_request(CallContext(operation="chat"), request)
    assert isinstance(changed, Request)
    assert changed.headers == {"A": "1", "X-Team": "search"}
    manager.after_response(CallContext(operation="chat"), changed, object())
    assert manager.stats()["plugins"]["example_headers"]["own"] == {"chat:ok": 1}


def test_example_package_is_listed_with_its_distribution(site: Site) -> None:
    """describe_installed shows the example's distribution and version, importing on demand."""
    site.install_example()
    rows = {row["name"]: row for row in describe_installed(("llmpool.plugins",))}
    row = rows["example_headers"]
    assert row["distribution"] == "llmpool-example-plugin" and row["version"] == "0.1.0"
    assert "llmpool_example_plugin" not in sys.modules
    loaded = {r["name"]: r for r in describe_installed(("llmpool.plugins",), load=True)}
    assert loaded["example_headers"]["loaded"] is True


def test_uninstalled_package_is_gone_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the site is removed and caches cleared, the example is no longer found."""
    with temporary_site(tmp_path / "site", monkeypatch) as installed:
        installed.install_example()
        assert "example_headers" in {row["name"] for row in describe_installed()}
    assert "example_headers" not in {row["name"] for row in describe_installed()}
    assert PluginManager().load_entry_points(["example_headers"]) == []


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
