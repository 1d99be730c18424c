"""A root-owned, read-only plugin directory, loaded by a process running as another uid.

The common deployment: ``/app/plugins`` installed by root (mode 755, files
644) and read by a worker that runs as an unprivileged user. The child
process imports llmpool as root, then drops to uid/gid 65534 for good (real,
effective and saved ids, no supplementary groups), as a gunicorn worker with
``user=`` does, and only then loads the directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = 65534
OTHER_USER = 65533

PLUGIN = """
from llmpool.plugins import LLMPlugin

class {cls}(LLMPlugin):
    name = "{name}"

    def on_attempt(self, ctx, attempt):
        pass
"""

CHILD = textwrap.dedent(
    """
    import json, os, sys

    import llmpool
    from llmpool.plugins import loading  # everything the load needs, imported as root

    os.setgroups([])
    os.setgid({uid})
    os.setuid({uid})
    results = {{"ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()]}}
    try:
        open(os.path.join(sys.argv[1], "written.py"), "w")
        results["could_write"] = True
    except PermissionError:
        results["could_write"] = False
    for name in sys.argv[1:]:
        manager = llmpool.PluginManager()
        loaded = manager.load_plugins(name)
        results[name] = {{
            "loaded": loaded,
            "failures": [f.reason for f in manager.load_failures],
        }}
        manager.close()
    print(json.dumps(results))
    """
)

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root: the test makes root-owned files and drops to uid 65534 in a child",
)


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A root-owned directory under /tmp that every user may enter and read."""
    root = Path(tempfile.mkdtemp(prefix="llmpool-plugins-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def make_dir(parent: Path, name: str, plugins: dict[str, int], uid: int = 0) -> Path:
    """A plugin directory owned by *uid* (mode 755) with one file per plugin, at its mode."""
    directory = parent / name
    directory.mkdir()
    for plugin, mode in plugins.items():
        path = directory / f"{plugin}.py"
        path.write_text(PLUGIN.format(cls=plugin.title(), name=plugin))
        path.chmod(mode)
        os.chown(path, uid, uid)
    directory.chmod(0o755)
    os.chown(directory, uid, uid)
    return directory


def load_as_nobody(*directories: Path) -> dict[str, object]:
    """Load each directory in a child process running as uid/gid 65534."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(uid=NOBODY), *map(str, directories)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_root_owned_read_only_directory_loads_for_another_uid(shared_root: Path) -> None:
    """A root-owned 755 directory of 644 files loads in a process running as uid 65534."""
    app = make_dir(shared_root, "app", {"audit": 0o644, "tagger": 0o444})
    result = load_as_nobody(app)
    assert result["ids"] == [NOBODY, NOBODY, NOBODY, NOBODY]
    assert result["could_write"] is False
    assert result[str(app)] == {"loaded": ["audit", "tagger"], "failures": []}


def test_unsafe_directories_are_still_refused_for_another_uid(shared_root: Path) -> None:
    """Writable-by-group files and directories owned by a third user stay refused, explained."""
    mixed = make_dir(shared_root, "mixed", {"audit": 0o644, "loose": 0o664})
    foreign = make_dir(shared_root, "foreign", {"audit": 0o644}, uid=OTHER_USER)
    result = load_as_nobody(mixed, foreign)
    mixed_result = result[str(mixed)]
    assert isinstance(mixed_result, dict)
    assert mixed_result["loaded"] == ["audit"]
    (loose,) = mixed_result["failures"]
    assert str(mixed / "loose.py") in loose and "mode 664" in loose
    assert "chmod go-w" in loose
    foreign_result = result[str(foreign)]
    assert isinstance(foreign_result, dict)
    assert foreign_result["loaded"] == []
    (refusal,) = foreign_result["failures"]
    assert str(foreign) in refusal and f"owned by uid {OTHER_USER}" in refusal
    assert "mode 755" in refusal and f"uid {NOBODY}" in refusal and "chown root" in refusal
