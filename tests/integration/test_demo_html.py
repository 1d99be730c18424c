"""`llmpool demo --html`: a self-contained page whose charts a headless Chromium draws."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from llmpool.demo_html import render_html

CHARTS = {"latency", "connections", "throughput", "faults", "memory"}
#: Measures every chart's drawn marks in the browser after layout, into data-drawn.
MEASURE = """<script>
for (const svg of document.querySelectorAll("svg.chart")) {
  let area = 0, marks = 0;
  for (const mark of svg.querySelectorAll(".mark")) {
    const box = mark.getBBox();
    if (box.width > 0 || box.height > 0) { marks += 1; area += box.width + box.height; }
  }
  svg.setAttribute("data-drawn", marks + " " + Math.round(area));
}
</script>"""


def chromium() -> str:
    """The Chromium binary, or skip: CI's .ci/run installs Debian's chromium package."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "chromium is not installed and cannot be installed here "
        "(Debian: apt-get install -y chromium; .ci/run does it before tox)"
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """The page and the JSON report of one small demo run with faults, made by the CLI."""
    page = tmp_path_factory.mktemp("demo") / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "llmpool.cli", "demo", "--calls", "80", "--threads", "4",
         "--latency-ms", "2", "--fault-rate", "0.2", "--json", "--html", str(page)],
        check=False, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "LLMPOOL_PLUGINS"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return page, json.loads(result.stdout)


class _Charts(HTMLParser):
    """Collects each chart's data-chart and data-drawn attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.drawn: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "svg" and "chart" in (found.get("class") or "").split():
            self.drawn[str(found.get("data-chart"))] = found.get("data-drawn")


def test_every_chart_has_drawn_content_in_headless_chromium(
    report: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    """Chromium lays out the page and every chart's marks have a non-empty size."""
    binary = chromium()
    page, _ = report
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text("utf-8").replace("</body>", MEASURE + "</body>"), "utf-8")
    result = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         probe.as_uri()],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    parser = _Charts()
    parser.feed(result.stdout)
    assert set(parser.drawn) == CHARTS
    for name, drawn in parser.drawn.items():
        assert drawn is not None, f"the {name} chart was not measured"
        marks, extent = (int(part) for part in drawn.split())
        assert marks > 0 and extent > 0, f"the {name} chart drew nothing: {drawn}"


def test_page_makes_no_network_reference(report: tuple[Path, dict[str, object]]) -> None:
    """The page loads nothing: no http(s) src or href, no @import, no url(), no script src."""
    text = report[0].read_text("utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "@import" not in text
    assert not re.search(r"url\(", text, re.I)
    assert not re.search(r"<(?:link|script|img|iframe|object|embed)\b", text, re.I)
    assert text.count("<svg") == len(CHARTS)


def test_json_still_printed_without_per_call_rows(report: tuple[Path, dict[str, object]]) -> None:
    """--json with --html prints the usual report; the per-call rows stay in the page."""
    data = report[1]
    for mode in ("pooled", "unpooled"):
        run = data[mode]
        assert isinstance(run, dict)
        assert run["ok"] + sum(run["errors"].values()) == 80
        assert "detail" not in run
        assert sum(run["retries_by_kind"].values()) == run["retries"]


def test_render_refuses_a_report_without_detail() -> None:
    """The page needs the per-call rows: a report made without detail=True is refused."""
    with pytest.raises(ValueError, match="detail=True"):
        render_html({"options": {}, "server": {}, "pooled": {"calls": 1}})
