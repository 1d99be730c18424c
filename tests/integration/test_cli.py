"""The llmpool command, run as a user would: a subprocess, its real output checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmpool.testing import MockLLMServer

QUICK = ["--calls", "60", "--threads", "4", "--latency-ms", "1"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("LLMPOOL_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-m", "llmpool.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        check=False,
    )


def test_demo_reports_pooled_and_unpooled_runs() -> None:
    """`llmpool demo` runs both passes on the embedded server and prints what pooling bought."""
    result = run("demo", *QUICK)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "embedded mock server" in out
    assert "connection reuse rate" in out and "connections opened" in out
    assert "latency p50 / p95 / p99" in out and "throughput" in out
    assert "memory rss / peak" in out and "plugins: usage" in out
    assert "What pooling bought" in out


def test_demo_json_report_adds_up() -> None:
    """`llmpool demo --json` prints a report whose counts add up."""
    result = run("demo", *QUICK, "--json", "--fault-rate", "0.1")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for mode in ("pooled", "unpooled"):
        run_ = report[mode]
        assert run_["ok"] + sum(run_["errors"].values()) == 60
    assert report["pooled"]["connections_opened"] < report["unpooled"]["connections_opened"]
    assert report["unpooled"]["reuse_rate"] == 0.0
    assert report["pooled"]["reuse_rate"] > 0.5
    assert "api_key" not in report["options"]


def test_demo_over_tls_with_a_throwaway_ca() -> None:
    """`llmpool demo --tls` serves HTTPS with a local CA that the client verifies."""
    pytest.importorskip("trustme")
    result = run("demo", *QUICK, "--tls", "--no-baseline", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["server"]["base_url"].startswith("https://")
    assert report["pooled"]["ok"] + sum(report["pooled"]["errors"].values()) == 60


def test_chat_against_a_server(mock_server: MockLLMServer) -> None:
    """`llmpool chat` sends one prompt with the flags' configuration and prints the reply."""
    result = run("chat", "hello", "--base-url", mock_server.base_url, "--model", "m")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Hello from the mock server."
    streamed = run("chat", "hello", "--stream", "--base-url", mock_server.base_url, "--model", "m")
    assert streamed.stdout.strip() == "Hello from the mock server."
    assert mock_server.requests[-1].stream


def test_chat_reports_errors_without_a_traceback(mock_server: MockLLMServer) -> None:
    """A failing call exits 1 with llmpool's message, not a traceback."""
    mock_server.inject("status=401")
    result = run("chat", "hello", "--base-url", mock_server.base_url, "--model", "m")
    assert result.returncode == 1
    assert "401" in result.stderr and "Traceback" not in result.stderr


def test_plugins_lists_providers_and_plugins() -> None:
    """`llmpool plugins` lists both groups with versions and load status."""
    result = run("plugins")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("openai", "anthropic", "logging", "metrics", "ratelimit", "cache", "usage"):
        assert name in result.stdout
    rows = json.loads(run("plugins", "--json").stdout)
    assert all(row["error"] is None for row in rows)
    assert {row["version"] for row in rows if row["distribution"] == "llmpool"}


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    """`llmpool check-config` prints the effective configuration with the key masked."""
    path = tmp_path / "llmpool.yaml"
    path.write_text(
        "client: {base_url: 'http://x/v1', api_key: sk-very-secret-value}\n"
        "connection_pool: {max_connections: 10, max_keepalive: 10, timeout: 30.0}\n"
    )
    path.chmod(0o600)
    result = run("check-config", str(path), env={"LLMPOOL_MAX_CONNECTIONS": "12"})
    assert result.returncode == 0, result.stderr
    assert "max_connections: 12" in result.stdout
    assert "sk-very-secret-value" not in result.stdout + result.stderr


def test_check_config_fails_with_file_key_and_line(tmp_path: Path) -> None:
    """A bad file exits 1 naming the file, the key path and the line."""
    path = tmp_path / "bad.yaml"
    path.write_text("connection_pool:\n  max_connections: 10\n  keepalive_expiri: 5\n")
    result = run("check-config", str(path))
    assert result.returncode == 1
    assert str(path) in result.stderr
    assert "connection_pool.keepalive_expiri" in result.stderr and "line 3" in result.stderr
    assert "keepalive_expiry" in result.stderr


def test_readable_secret_file_warns(tmp_path: Path) -> None:
    """check-config warns when a file holding a key is readable by others."""
    path = tmp_path / "open.yaml"
    path.write_text("client: {api_key: sk-very-secret-value}\n")
    path.chmod(0o644)
    result = run("check-config", str(path))
    assert result.returncode == 0
    assert "readable by other users" in result.stderr
    assert "sk-very-secret-value" not in result.stderr
