"""The llmpool command and hostile or careless configuration: secrets, bombs, bounds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from doubles import refused_port

import llmpool
from llmpool import ConfigError
from llmpool.testing import MockLLMServer


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith("LLMPOOL_") and "API_KEY" not in k
    }
    return subprocess.run(
        [sys.executable, "-m", "llmpool.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**full_env, **(env or {})},
        check=False,
    )


def write(tmp_path: Path, text: str, mode: int = 0o600, name: str = "llmpool.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


# --------------------------------------------------------------------------- secrets


def test_check_config_masks_every_credential_header(tmp_path: Path) -> None:
    """check-config masks X-Goog-Api-Key and key-like headers, and keeps plain ones."""
    path = write(
        tmp_path,
        "client:\n  base_url: http://127.0.0.1:9/v1\n  default_headers:\n"
        "    X-Goog-Api-Key: goog-secret-value\n    X-Acme-Token: acme-secret-value\n"
        "    X-Trace: visible-value\n",
    )
    for extra in ((), ("--json",)):
        result = run("check-config", str(path), *extra)
        assert result.returncode == 0, result.stderr
        out = result.stdout + result.stderr
        assert "goog-secret-value" not in out and "acme-secret-value" not in out
        assert "visible-value" in out


def test_check_config_hides_a_non_string_key(tmp_path: Path) -> None:
    """A non-string api_key fails check-config naming key, file and line, not the value."""
    path = write(
        tmp_path, "client:\n  base_url: http://127.0.0.1:9/v1\n  api_key: 98765432101234\n"
    )
    result = run("check-config", str(path))
    assert result.returncode == 1
    assert "client.api_key" in result.stderr and str(path) in result.stderr
    assert "line 3" in result.stderr
    assert "98765432101234" not in result.stderr


def test_check_config_warns_for_a_key_only_in_a_header(tmp_path: Path) -> None:
    """A readable file whose only credential is an Authorization header is warned about."""
    path = write(
        tmp_path,
        "client:\n  base_url: http://127.0.0.1:9/v1\n"
        "  default_headers: {Authorization: Bearer sk-header-secret-1}\n",
        mode=0o644,
    )
    result = run("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "readable by other users" in result.stderr
    assert "client.default_headers.Authorization" in result.stderr
    assert "sk-header-secret-1" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "client",
    [
        "{base_url: 'http://127.0.0.1:9/v1', default_headers: {Authorization: 12345}}",
        "{base_url: 'ftp://127.0.0.1:9/v1'}",
        "{base_url: 'http://127.0.0.1:9/v1', provider: no-such-provider}",
    ],
)
def test_check_config_refuses_what_from_config_refuses(tmp_path: Path, client: str) -> None:
    """check-config builds the client as from_config does, and fails with the same error."""
    path = write(tmp_path, f"client: {client}\n")
    with pytest.raises(ConfigError) as info:
        llmpool.Client.from_config(str(path)).close()
    result = run("check-config", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"llmpool check-config: {info.value}"
    assert "Traceback" not in result.stderr


def test_check_config_without_base_url_still_validates(tmp_path: Path) -> None:
    """A file without base_url is checked whole, and says which base URL calls go to."""
    path = write(tmp_path, "client: {provider: no-such-provider}\n")
    result = run("check-config", str(path))
    assert result.returncode == 1
    assert "no-such-provider" in result.stderr
    path = write(tmp_path, "client: {provider: anthropic}\n")
    result = run("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "client.base_url is not set; calls go to https://api.anthropic.com/v1" in result.stderr


# --------------------------------------------------------------------------- passwords in URLs


def test_check_config_masks_proxy_credentials(tmp_path: Path) -> None:
    """check-config shows the proxy's host but not its user and password."""
    path = write(
        tmp_path,
        "client: {base_url: 'http://127.0.0.1:9/v1'}\n"
        "connection_pool: {proxy_url: 'http://pu:proxypass@127.0.0.1:3128'}\n",
    )
    result = run("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "proxy_url: http://***@127.0.0.1:3128" in result.stdout
    assert "proxypass" not in result.stdout + result.stderr


def test_check_config_never_shows_a_password_in_base_url(tmp_path: Path) -> None:
    """A password in base_url appears neither in check-config's output nor in its error."""
    path = write(tmp_path, "client: {base_url: 'http://user:pa55word@127.0.0.1:9/v1'}\n")
    result = run("check-config", str(path))
    assert "pa55word" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_chat_error_never_shows_a_password_in_base_url() -> None:
    """`llmpool chat` against a URL with a password reports the failure without the password."""
    url = f"http://user:pa55word@127.0.0.1:{refused_port()}/v1"
    result = run("chat", "hello", "--model", "m", "--base-url", url)
    assert result.returncode == 1
    assert "llmpool chat:" in result.stderr and "127.0.0.1" in result.stderr
    assert "pa55word" not in result.stdout + result.stderr


def test_demo_never_shows_a_password_in_base_url(mock_server: MockLLMServer) -> None:
    """`llmpool demo --json` and its text report never show a password given in --base-url."""
    url = mock_server.base_url.replace("http://", "http://user:pa55word@")
    quick = ("--calls", "4", "--threads", "2", "--no-baseline", "--plugins", "")
    for extra in (("--json",), ()):
        result = run("demo", *quick, *extra, "--base-url", url, "--model", "m")
        assert "pa55word" not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- YAML bombs


def laughs(indent: str, levels: int = 9) -> str:
    lines = [f"{indent}l0: &l0 [{', '.join(['lol'] * 10)}]"]
    for level in range(1, levels):
        lines.append(f"{indent}l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text",
    [
        "client:\n  default_headers:\n" + laughs("    "),
        "plugins:\n  settings:\n    usage:\n" + laughs("      "),
    ],
    ids=["default_headers", "plugin settings"],
)
def test_check_config_refuses_an_alias_bomb(tmp_path: Path, text: str) -> None:
    """check-config on a billion-laughs file exits 1 naming the file, with no traceback."""
    path = write(tmp_path, text)
    result = run("check-config", str(path))
    assert result.returncode == 1
    assert str(path) in result.stderr
    assert "alias" in result.stderr.replace(str(path), "")
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("raw", ["1e9", "1000000000"])
def test_check_config_refuses_an_absurd_connection_cap(tmp_path: Path, raw: str) -> None:
    """LLMPOOL_MAX_CONNECTIONS=1e9 (or 10**9) exits 1 naming the variable and the key."""
    path = write(tmp_path, "client: {base_url: 'http://127.0.0.1:9/v1'}\n")
    result = run("check-config", str(path), env={"LLMPOOL_MAX_CONNECTIONS": raw})
    assert result.returncode == 1
    assert "LLMPOOL_MAX_CONNECTIONS" in result.stderr
    assert "connection_pool.max_connections" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- plugins.strict


def test_check_config_honours_plugins_strict(tmp_path: Path) -> None:
    """With plugins.strict a plugin that cannot load fails check-config; without, it warns."""
    text = "client: {base_url: 'http://127.0.0.1:9/v1'}\nplugins: {names: [no-such-plugin]%s}\n"
    strict = run("check-config", str(write(tmp_path, text % ", strict: true")))
    assert strict.returncode == 1
    assert "no-such-plugin" in strict.stderr and "Traceback" not in strict.stderr
    lenient = run("check-config", str(write(tmp_path, text % "")))
    assert lenient.returncode == 0, lenient.stderr
    assert "no-such-plugin" in lenient.stderr


def test_from_config_with_plugins_strict_refuses_a_missing_plugin() -> None:
    """plugins.strict in the configuration reaches the client: a missing plugin is an error."""
    from llmpool import Client
    from llmpool.exceptions import PluginLoadError

    config = {
        "client": {"base_url": "http://127.0.0.1:9/v1"},
        "plugins": {"names": ["no-such-plugin"], "strict": True},
    }
    with pytest.raises(PluginLoadError):
        Client.from_config(config)
    Client.from_config({**config, "plugins": {"names": ["no-such-plugin"]}}).close()
