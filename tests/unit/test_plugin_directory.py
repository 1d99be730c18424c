"""Plugin directories: loading by file path, failure isolation and the safety rules."""

from __future__ import annotations

import hashlib
import os
import sys
import textwrap
from pathlib import Path

import pytest

from llmpool.exceptions import PluginLoadError
from llmpool.plugins import LLMPlugin, PluginManager, loading

GOOD = """
from llmpool.plugins import LLMPlugin

class Good(LLMPlugin):
    name = "good"

    def on_attempt(self, ctx, attempt):
        pass
"""


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """An empty plugin directory with safe permissions (whatever the umask)."""
    path = tmp_path / "plugins"
    path.mkdir()
    path.chmod(0o755)
    return path


def write(directory: Path, name: str, source: str, mode: int = 0o644) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    path.chmod(mode)
    return path


def reasons(manager: PluginManager) -> dict[str, str]:
    return {f.name: f.reason for f in manager.load_failures}


def test_loads_classes_and_plugin_attribute_with_sha256(plugin_dir: Path) -> None:
    """Subclasses and a `plugin = ...` attribute are found; each file's sha256 is recorded."""
    good = write(plugin_dir, "good.py", GOOD)
    write(
        plugin_dir,
        "exposed.py",
        """
        from llmpool.plugins import LLMPlugin

        class Exposed(LLMPlugin):
            name = "exposed"

        plugin = Exposed()
        """,
    )
    path_before = list(sys.path)
    manager = PluginManager()
    assert manager.load_plugins(plugin_dir) == ["exposed", "good"]
    assert sys.path == path_before
    stats = manager.stats()["plugins"]["good"]
    assert stats["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert stats["source"] == f"directory:{plugin_dir / 'good.py'}"
    assert stats["module"] in sys.modules
    assert stats["module"] != "good"
    assert manager.load_failures == ()


def test_nameless_plugin_is_named_after_its_file(plugin_dir: Path) -> None:
    """A plugin class without a name takes the file's stem."""
    write(
        plugin_dir,
        "stemmed.py",
        "from llmpool.plugins import LLMPlugin\nclass P(LLMPlugin): pass\n",
    )
    manager = PluginManager()
    assert manager.load_plugins(plugin_dir) == ["stemmed"]


def test_private_and_non_python_files_are_ignored(plugin_dir: Path) -> None:
    """Files starting with '_' and files that are not .py are never imported."""
    write(plugin_dir, "_helper.py", "raise SystemExit('must not run')")
    write(plugin_dir, "notes.txt", "raise SystemExit('must not run')")
    manager = PluginManager()
    assert manager.load_plugins(plugin_dir) == []
    assert manager.load_failures == ()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import llmpool_no_such_module\n", "ModuleNotFoundError"),
        ("def broken(:\n", "SyntaxError"),
        ("import sys\nsys.exit(4)\n", "SystemExit"),
        ("raise RuntimeError('at import')\n", "RuntimeError: at import"),
        ("assert False, 'asserted'\n", "AssertionError"),
    ],
)
def test_a_failing_file_is_recorded_and_others_still_load(
    plugin_dir: Path, source: str, expected: str
) -> None:
    """Import errors, syntax errors and sys.exit() at import are load failures, not crashes."""
    write(plugin_dir, "bad.py", source)
    write(plugin_dir, "good.py", GOOD)
    manager = PluginManager()
    assert manager.load_plugins(plugin_dir) == ["good"]
    assert expected in reasons(manager)["bad"]
    assert not any("_bad" in name and "llmpool_plugin" in name for name in sys.modules)


def test_keyboard_interrupt_is_not_swallowed(plugin_dir: Path) -> None:
    """Ctrl-C while a plugin imports still interrupts the program."""
    write(plugin_dir, "interrupt.py", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        PluginManager().load_plugins(plugin_dir)


def test_bad_hook_signature_in_a_file_is_a_load_failure(plugin_dir: Path) -> None:
    """A directory plugin with a misspelt hook is refused, naming plugin and method."""
    write(
        plugin_dir,
        "typo.py",
        """
        from llmpool.plugins import LLMPlugin

        class Typo(LLMPlugin):
            name = "typo"

            def on_retyr(self, ctx, attempt, error, delay):
                pass
        """,
    )
    manager = PluginManager()
    assert manager.load_plugins(plugin_dir) == []
    assert "on_retyr" in reasons(manager)["typo"]


def test_file_without_plugin_is_a_load_failure(plugin_dir: Path) -> None:
    """A .py file that defines no plugin is reported."""
    write(plugin_dir, "empty.py", "X = 1\n")
    manager = PluginManager()
    manager.load_plugins(plugin_dir)
    assert "defines no LLMPlugin" in reasons(manager)["empty"]


def test_group_writable_directory_is_refused(plugin_dir: Path) -> None:
    """A directory others can write to is refused as a whole."""
    write(plugin_dir, "good.py", GOOD)
    plugin_dir.chmod(0o775)
    manager = PluginManager()
    assert manager.load_plugins(plugin_dir) == []
    (failure,) = manager.load_failures
    assert "writable by group or others" in failure.reason


def test_unsafe_directory_raises_in_strict_mode(plugin_dir: Path) -> None:
    """strict=True turns the refusal into PluginLoadError."""
    plugin_dir.chmod(0o757)
    with pytest.raises(PluginLoadError) as info:
        PluginManager(strict=True).load_plugins(plugin_dir)
    assert info.value.source == f"directory:{plugin_dir}"


def test_world_writable_file_is_refused(plugin_dir: Path) -> None:
    """A plugin file others can write to is refused; the safe ones load."""
    write(plugin_dir, "good.py", GOOD)
    write(plugin_dir, "open.py", GOOD.replace('"good"', '"open"'), mode=0o646)
    manager = PluginManager()
    assert manager.load_plugins(plugin_dir) == ["good"]
    assert "writable by group or others" in reasons(manager)["open"]


def test_symlink_escaping_the_directory_is_refused(plugin_dir: Path, tmp_path: Path) -> None:
    """A symlink that resolves outside the plugin directory is refused."""
    outside = write(tmp_path, "outside.py", GOOD.replace('"good"', '"outside"'))
    (plugin_dir / "escape.py").symlink_to(outside)
    manager = PluginManager()
    assert manager.load_plugins(plugin_dir) == []
    assert "resolves outside" in reasons(manager)["escape"]


def test_symlink_inside_the_directory_is_followed(plugin_dir: Path) -> None:
    """A symlink to a file inside the directory loads from its target."""
    sub = plugin_dir / "impl"
    sub.mkdir()
    sub.chmod(0o755)
    write(sub, "real.py", GOOD)
    (plugin_dir / "linked.py").symlink_to(sub / "real.py")
    manager = PluginManager()
    assert manager.load_plugins(plugin_dir) == ["good"]


def test_missing_or_non_directory_path_is_a_failure(tmp_path: Path) -> None:
    """A path that does not exist or is a file is reported, not raised."""
    manager = PluginManager()
    assert manager.load_plugins(tmp_path / "missing") == []
    file = write(tmp_path, "file.py", GOOD)
    assert manager.load_plugins(file) == []
    assert len(manager.load_failures) == 2
    assert "not a directory" in manager.load_failures[1].reason


def test_directory_plugin_clashing_with_explicit_one_is_refused(plugin_dir: Path) -> None:
    """The same name from an explicit registration and a directory is an error."""

    class Good(LLMPlugin):
        name = "good"

    write(plugin_dir, "good.py", GOOD)
    manager = PluginManager()
    explicit = manager.register_plugin(Good)
    assert manager.load_plugins(plugin_dir) == []
    assert manager.get("good") is explicit
    reason = reasons(manager)["good"]
    assert "explicit" in reason and "directory:" in reason


def test_directory_plugin_receives_its_settings(plugin_dir: Path) -> None:
    """Settings are given to directory plugins by name."""
    write(
        plugin_dir,
        "configured.py",
        """
        from llmpool.plugins import LLMPlugin

        class Configured(LLMPlugin):
            name = "configured"

            def setup(self, context):
                self.settings = dict(context.settings)
        """,
    )
    manager = PluginManager()
    manager.load_plugins(plugin_dir, settings={"configured": {"k": "v"}})
    assert manager.get("configured").settings == {"k": "v"}  # type: ignore[union-attr]


def test_root_owned_directory_is_trusted_by_another_user(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root-owned, not group/world-writable directory and file load for a non-root user."""
    if os.geteuid() != 0:
        pytest.skip("needs root-owned files: the test must run as root")
    write(plugin_dir, "good.py", GOOD)
    monkeypatch.setattr(loading, "_current_uid", lambda: 65534)
    manager = PluginManager()
    assert manager.load_plugins(plugin_dir) == ["good"]
    assert not manager.load_failures


def test_foreign_owner_refusal_names_path_owner_mode_and_fix(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory owned by neither the current user nor root: path, owner, mode and a fix."""
    write(plugin_dir, "good.py", GOOD)
    if os.geteuid() == 0:
        os.chown(plugin_dir, 65533, -1)  # another, non-root user
    else:
        monkeypatch.setattr(loading, "_current_uid", lambda: os.geteuid() + 1)
    owner = plugin_dir.stat().st_uid
    manager = PluginManager()
    assert manager.load_plugins(plugin_dir) == []
    reason = manager.load_failures[0].reason
    assert str(plugin_dir) in reason
    assert f"owned by uid {owner}" in reason and "mode 755" in reason
    assert f"chown root {plugin_dir}" in reason


def test_writable_refusal_names_path_owner_mode_and_fix(plugin_dir: Path) -> None:
    """A group-writable file's refusal names its path, owner, mode and `chmod go-w`."""
    path = write(plugin_dir, "open.py", GOOD, mode=0o664)
    manager = PluginManager()
    assert manager.load_plugins(plugin_dir) == []
    reason = reasons(manager)["open"]
    assert str(path) in reason and "mode 664" in reason
    assert f"uid {path.stat().st_uid}" in reason
    assert f"chmod go-w {path}" in reason
