"""`llmpool demo --endpoints N --fail K`, run as a user would: a subprocess, real sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

GROUP = ["--endpoints", "3", "--fail", "1", "--calls", "120", "--threads", "4"]
QUIET = ["--latency-ms", "2", "--fault-rate", "0", "--no-baseline"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LLMPOOL_PLUGINS"}
    return subprocess.run(
        [sys.executable, "-m", "llmpool.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def rows_by_name(run_: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["endpoint"]: row for row in run_["endpoints"]}


def test_demo_over_a_group_shows_failover_in_the_endpoint_table() -> None:
    """The text report names the refusing endpoint and prints the per-endpoint table."""
    result = run("demo", *GROUP, *QUIET)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "over a group of 3 endpoints" in out
    assert "ep1 refuses connections" in out
    assert "calls ok                  120 of 120" in out
    table = out[out.index("Endpoints (pooled run):") :].splitlines()
    assert table[1].split() == [
        "endpoint",
        "role",
        "state",
        "requests",
        "failures",
        "cool-downs",
        "latency",
        "last",
        "error",
    ]
    assert table[2].startswith("  ep1       refuses connections")
    assert "ConnectError" in table[2]
    assert table[3].startswith("  ep2       mock server") and table[3].split()[3] == "healthy"
    assert table[4].startswith("  ep3       mock server")
    assert table[5].startswith("Failover: ")


def test_demo_json_over_a_group_adds_up() -> None:
    """Every call is answered by a live endpoint; the refusing one only fails; the counts add up."""
    result = run("demo", *GROUP, *QUIET, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["options"]["endpoints"] == 3 and report["options"]["fail"] == 1
    assert [e["role"] for e in report["server"]["endpoints"]] == [
        "refuses connections",
        "mock server",
        "mock server",
    ]
    pooled = report["pooled"]
    assert pooled["ok"] == 120 and pooled["errors"] == {}
    rows = rows_by_name(pooled)
    dead = rows["ep1"]
    assert dead["requests"] == dead["failures"] >= 1
    assert dead["last_error"].startswith("ConnectError")
    assert dead["latency_ms"] is None
    # Each call ended with one good attempt at a live endpoint; each failed one went on.
    assert sum(rows[n]["requests"] - rows[n]["failures"] for n in ("ep2", "ep3")) == 120
    assert rows["ep2"]["failures"] == rows["ep3"]["failures"] == 0
    assert pooled["retries"] == dead["failures"]
    assert pooled["retries_by_kind"] == {"ConnectError": dead["failures"]}


def test_demo_html_over_a_group_has_the_endpoint_table(tmp_path: Path) -> None:
    """The HTML page carries the per-endpoint table; the JSON keeps it for both runs."""
    page = tmp_path / "report.html"
    result = run("demo", *GROUP, "--latency-ms", "2", "--json", "--html", str(page))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(rows_by_name(report["unpooled"])) == {"ep1", "ep2", "ep3"}
    html = page.read_text(encoding="utf-8")
    section = html[html.index('<section class="endpoints">') :]
    section = section[: section.index("</section>")]
    for name in ("ep1", "ep2", "ep3"):
        assert f'<td class="num">{name}</td>' in section
    assert "refuses connections" in section and "ConnectError" in section
    assert "group of 3 endpoints" in html


def test_demo_without_endpoints_reports_no_group() -> None:
    """Without --endpoints the report has neither group options nor an endpoint table."""
    result = run("demo", "--calls", "40", "--threads", "2", *QUIET, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "endpoints" not in report["options"] and "fail" not in report["options"]
    assert "endpoints" not in report["pooled"] and "endpoints" not in report["server"]


def test_demo_refuses_a_group_it_cannot_run() -> None:
    """--fail without --endpoints, no working endpoint left, or --base-url with --endpoints fail."""
    cases = {
        ("--fail", "1"): "--fail needs --endpoints",
        ("--endpoints", "2", "--fail", "2"): "at least one working endpoint",
        ("--endpoints", "2", "--base-url", "http://127.0.0.1:9/v1"): "--base-url",
    }
    for args, message in cases.items():
        result = run("demo", *args, "--calls", "1")
        assert result.returncode == 1, (args, result.stdout)
        assert message in result.stderr
