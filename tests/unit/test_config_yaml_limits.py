"""load_config refuses YAML that expands beyond its size through aliases, or nests without end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmpool import ConfigError, load_config
from llmpool.config_yaml import MAX_ALIAS_NODES


def bomb(levels: int = 9, width: int = 10, indent: str = "    ") -> str:
    """A "billion laughs": each level is a list of *width* aliases of the level before."""
    lines = [f"{indent}l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"{indent}l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


BOMBS = {
    "default_headers": "client:\n  default_headers:\n" + bomb(),
    "plugin settings": "plugins:\n  settings:\n    usage:\n" + bomb(indent="      "),
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "llmpool.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("where", sorted(BOMBS))
def test_an_alias_bomb_is_refused(tmp_path: Path, where: str) -> None:
    """A billion-laughs document is refused with a ConfigError naming the file and a line."""
    path = write(tmp_path, BOMBS[where])
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "alias" in info.value.message
    assert info.value.file == str(path)
    assert info.value.line is not None


def test_aliases_may_add_up_to_the_bound(tmp_path: Path) -> None:
    """Aliases that add fewer nodes than MAX_ALIAS_NODES are fine; one level more is not."""
    base = "plugins:\n  settings:\n    usage:\n"
    assert 10 * 10 * 10 < MAX_ALIAS_NODES < 10 * 10 * 10 * 10 * 10
    config = load_config(write(tmp_path, base + bomb(levels=3, indent="      ")), environ={})
    assert len(config.plugins.settings["usage"]["l2"]) == 10
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, base + bomb(levels=5, indent="      ")), environ={})
    assert "alias" in info.value.message


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    """An alias inside its own anchor (an endless structure) is refused."""
    path = write(tmp_path, "plugins:\n  settings:\n    usage: &loop {again: *loop}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "alias" in info.value.message
    assert info.value.file == str(path)


def test_endless_nesting_is_refused(tmp_path: Path) -> None:
    """A document nested deeper than Python can recurse is a ConfigError, not RecursionError."""
    path = write(tmp_path, "plugins:\n  settings:\n    usage: " + "[" * 50_000 + "]" * 50_000)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "nested" in info.value.message
    assert info.value.file == str(path)


def test_a_control_character_is_invalid_yaml(tmp_path: Path) -> None:
    """A character YAML's reader refuses is a ConfigError naming the file, not a ReaderError."""
    path = write(tmp_path, "client:\n  provider: open\x1fai\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.message.startswith("invalid YAML")
    assert info.value.file == str(path)


def test_the_file_is_composed_once_for_data_and_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One node tree gives both the values and the line numbers: the YAML is parsed once."""
    composed: list[int] = []
    real = yaml.SafeLoader.get_single_node

    def counting(loader: yaml.SafeLoader) -> Any:
        composed.append(1)
        return real(loader)

    monkeypatch.setattr(yaml.SafeLoader, "get_single_node", counting)
    for name in ("compose", "load", "safe_load", "compose_all", "load_all", "safe_load_all"):
        monkeypatch.setattr(yaml, name, _refuse)
    path = write(tmp_path, "client:\n  base_url: http://h/v1\nconnection_pool:\n  timeout: -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.line == 4  # the line map came from the same tree
    assert composed == [1]


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the YAML text was parsed a second time")
