"""The ``llmpool demo --html`` report: one self-contained HTML page of charts.

Everything is inline: SVG drawn here, CSS in a ``<style>`` element, no
script, no font, no image and no link to anything outside the file, so the
page opens anywhere (offline, attached to a ticket) and reads the same. The
data comes from :func:`llmpool.demo.run_demo` with ``detail=True``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmpool.demo_endpoints import group_head, render_endpoints_html
from llmpool.svg_plot import (
    BOTTOM,
    STRIP,
    TOP,
    Plot,
    esc,
    log_ticks,
    nice_floor,
    thin,
)

__all__ = ["render_html", "write_html"]

#: A colour per run, by the run's key in the report.
COLOURS = {"pooled": "#1f6feb", "unpooled": "#d9480f"}
LABELS = {"pooled": "pooled", "unpooled": "new connection per call"}
#: Memory states, lowest first, with their band colours.
STATES = (
    ("normal", "#e6f4ea"),
    ("warn", "#fff4c2"),
    ("gc", "#ffe0b2"),
    ("shed", "#ffc9c9"),
    ("critical", "#ff8787"),
)


def write_html(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report page to *path* (UTF-8) and return the path."""
    target = Path(path)
    target.write_text(render_html(report), encoding="utf-8")
    return target


def render_html(report: dict[str, Any]) -> str:
    """The whole page for a demo *report* made with ``detail=True``."""
    runs: dict[str, Any] = {key: report[key] for key in ("pooled", "unpooled") if key in report}
    missing = [key for key, run in runs.items() if "detail" not in run]
    if missing:
        raise ValueError("the HTML report needs a demo run with detail=True")
    sections = [
        _section(
            "Latency",
            "Share of successful calls finished within a time (log scale): the further "
            "left, the faster.",
            _latency_chart(runs),
        ),
        _section(
            "Connections opened",
            "TCP connections the pool opened since the run started. Pooling opens a few and "
            "reuses them; without it every call opens one.",
            _connections_chart(runs),
        ),
        _section(
            "Throughput",
            "Calls finished per second over the run (retries included in each call).",
            _throughput_chart(runs),
        ),
        _section(
            "Retries and errors",
            "Retries by cause and calls that failed for good, by error type.",
            _faults_chart(runs),
        ),
        _section(
            "Memory",
            "Resident memory sampled during each run, against the memory manager's budget and "
            "thresholds; the strips below show the manager's state over time.",
            _memory_chart(runs),
        ),
    ]
    if "endpoints" in report["pooled"]:
        sections.insert(0, render_endpoints_html(report["pooled"], esc))
    return _PAGE.format(
        title="llmpool demo report",
        heading=esc(_heading(report)),
        summary=_summary_table(report, runs),
        sections="\n".join(sections),
    )


# --------------------------------------------------------------------------- page


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1f24;
       margin: 24px auto; max-width: 760px; padding: 0 16px; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }}
h2 {{ font-size: 17px; margin: 28px 0 2px; }}
p.lead, p.note {{ color: #57606a; margin: 2px 0 8px; }}
table {{ border-collapse: collapse; margin: 12px 0; width: 100%; }}
th, td {{ text-align: left; padding: 4px 8px; border-bottom: 1px solid #d0d7de; }}
th {{ font-weight: 600; }}
td.num {{ font-variant-numeric: tabular-nums; }}
svg {{ display: block; max-width: 100%; height: auto; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #57606a; }}
svg .grid {{ stroke: #eaeef2; fill: none; }}
svg .axis {{ stroke: #8c959f; fill: none; }}
.key {{ display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; }}
</style>
</head>
<body>
<h1>llmpool demo</h1>
<p class="lead">{heading}</p>
{summary}
{sections}
</body>
</html>
"""


def _heading(report: dict[str, Any]) -> str:
    opts, server = report["options"], report["server"]
    if "endpoints" in server:
        return group_head(report).removeprefix("llmpool demo: ") + "."
    text = (
        f"{opts['calls']} calls from {opts['threads']} threads "
        f"({round(opts['stream_ratio'] * 100)}% streamed) against the {server['kind']} "
        f"at {server['base_url']}"
    )
    if server["kind"] != "external":
        text += f", {server['latency_ms']:g} ms latency, {server['fault_rate']:.0%} faults"
        text += ", over TLS" if server.get("tls") else ""
    return text + "."


def _section(title: str, note: str, svg: str) -> str:
    return (
        f'<section class="chart-section">\n<h2>{esc(title)}</h2>\n'
        f'<p class="note">{esc(note)}</p>\n{svg}\n</section>'
    )


def _summary_table(report: dict[str, Any], runs: dict[str, Any]) -> str:
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("calls ok", lambda r: f"{r['ok']} of {r['calls']}"),
        ("retries", lambda r: str(r["retries"])),
        ("errors", lambda r: str(sum(r["errors"].values()))),
        ("connection reuse rate", lambda r: f"{r['reuse_rate']:.1%}"),
        ("connections opened", lambda r: str(r["connections_opened"])),
        (
            "latency p50 / p95 / p99",
            lambda r: (
                " / ".join(f"{r['latency_ms'][p]:.1f}" for p in ("p50", "p95", "p99")) + " ms"
            ),
        ),
        ("throughput", lambda r: f"{r['throughput']:.0f} calls/s"),
        (
            "memory rss / peak",
            lambda r: f"{r['memory']['rss_mib']} / {r['memory']['peak_mib']} MiB",
        ),
    ]
    head = "".join(
        f'<th><span class="key" style="background:{COLOURS[k]}"></span>{esc(LABELS[k])}</th>'
        for k in runs
    )
    body = "".join(
        f"<tr><th>{esc(label)}</th>"
        + "".join(f'<td class="num">{esc(cell(run))}</td>' for run in runs.values())
        + "</tr>"
        for label, cell in rows
    )
    table = f'<table class="summary"><tr><th></th>{head}</tr>{body}</table>'
    gain = report.get("gain")
    if gain:
        table += (
            f'<p class="note">What pooling bought: {gain["throughput_x"]:.2f}x the throughput, '
            f"{gain['connections_saved']} fewer connections opened, p50 latency "
            f"x{gain['p50_latency_change']:.2f}.</p>"
        )
    return table


# --------------------------------------------------------------------------- charts


def _latency_chart(runs: dict[str, Any]) -> str:
    series = {}
    for key, run in runs.items():
        values = sorted(took for _, took, error in run["detail"]["calls"] if error is None)
        series[key] = [(max(v, 0.01), (i + 1) / len(values)) for i, v in enumerate(values)]
    every = [x for points in series.values() for x, _ in points] or [1.0]
    low = nice_floor(min(every))
    plot = Plot(
        x=(math.log10(low), math.log10(max(every) * 1.05 + 1e-9)),
        y=(0.0, 1.0),
        x_label="latency (ms, log scale)",
        y_label="share of calls",
    )
    marks = [
        plot.line([(math.log10(x), y) for x, y in thin(points)], COLOURS[key], step=True)
        for key, points in series.items()
    ]
    return plot.svg(
        "latency",
        marks,
        x_ticks=log_ticks(low, max(every)),
        y_ticks=[(v, f"{v:.0%}") for v in (0, 0.25, 0.5, 0.75, 1.0)],
        legend=_legend(runs),
    )


def _connections_chart(runs: dict[str, Any]) -> str:
    series = {
        key: [(row[0], float(row[1])) for row in run["detail"]["timeline"]]
        for key, run in runs.items()
    }
    t_max = max((p[0] for points in series.values() for p in points), default=1.0) or 1.0
    y_max = max((p[1] for points in series.values() for p in points), default=1.0) or 1.0
    plot = Plot(x=(0.0, t_max), y=(0.0, y_max * 1.08), x_label="seconds", y_label="connections")
    marks = [plot.line(points, COLOURS[key], step=True) for key, points in series.items()]
    return plot.svg("connections", marks, legend=_legend(runs))


def _throughput_chart(runs: dict[str, Any]) -> str:
    ends = {
        key: sorted(start + took / 1000.0 for start, took, _ in run["detail"]["calls"])
        for key, run in runs.items()
    }
    t_max = max((e[-1] for e in ends.values() if e), default=1.0) or 1.0
    width = max(t_max / 30.0, 0.05)
    series = {}
    for key, values in ends.items():
        bins = [0] * (int(t_max / width) + 1)
        for value in values:
            bins[min(int(value / width), len(bins) - 1)] += 1
        series[key] = [((i + 0.5) * width, n / width) for i, n in enumerate(bins)]
    y_max = max((y for points in series.values() for _, y in points), default=1.0) or 1.0
    plot = Plot(x=(0.0, t_max), y=(0.0, y_max * 1.08), x_label="seconds", y_label="calls/s")
    marks = [plot.line(points, COLOURS[key]) for key, points in series.items()]
    legend = [
        (COLOURS[key], f"{LABELS[key]}: {run['throughput']:.0f} calls/s overall")
        for key, run in runs.items()
    ]
    return plot.svg("throughput", marks, legend=legend)


def _faults_chart(runs: dict[str, Any]) -> str:
    kinds: dict[str, dict[str, int]] = {}
    for key, run in runs.items():
        for kind, n in run.get("retries_by_kind", {}).items():
            kinds.setdefault(f"retry: {kind}", {})[key] = n
        for kind, n in run["errors"].items():
            kinds.setdefault(f"failed: {kind}", {})[key] = n
    names = sorted(kinds)
    bar, gap = 12, 10
    height = TOP + BOTTOM + max(1, len(names)) * (bar * len(runs) + gap)
    n_max = max((n for counts in kinds.values() for n in counts.values()), default=1)
    plot = Plot(
        x=(0.0, n_max * 1.1),
        y=(0.0, 1.0),
        x_label="count",
        y_label="",
        height=height,
        left=170,
    )
    marks, labels = [], []
    y = TOP + gap / 2
    for name in names:
        labels.append(
            f'<text x="{plot.left - 6}" y="{y + bar * len(runs) / 2 + 4:.1f}" '
            f'text-anchor="end">{esc(name)}</text>'
        )
        for key in runs:
            n = kinds[name].get(key, 0)
            w = plot.sx(n) - plot.left
            marks.append(
                f'<rect class="mark" x="{plot.left}" y="{y:.1f}" width="{max(w, 0.0):.1f}" '
                f'height="{bar - 2}" fill="{COLOURS[key]}"><title>{esc(LABELS[key])}: '
                f"{n}</title></rect>"
            )
            if n:
                marks.append(f'<text x="{plot.left + w + 4:.1f}" y="{y + bar - 3:.1f}">{n}</text>')
            y += bar
        y += gap
    if not names:
        labels.append(
            f'<text x="{plot.left + 8}" y="{TOP + 16}">no retries and no failed calls</text>'
        )
    return plot.svg("faults", labels + marks, y_ticks=[], legend=_legend(runs))


def _memory_chart(runs: dict[str, Any]) -> str:
    plot = Plot(x=(0.0, 1.0), y=(0.0, 1.0), x_label="seconds", y_label="MiB", strips=len(runs))
    limit = max(float(run["memory"]["limit_mib"] or 0.0) for run in runs.values())
    rows = {key: run["detail"]["timeline"] for key, run in runs.items()}
    t_max = max((row[0] for timeline in rows.values() for row in timeline), default=1.0) or 1.0
    rss_max = max((row[3] or 0.0 for timeline in rows.values() for row in timeline), default=1.0)
    top = max(limit, rss_max) * 1.05 or 1.0
    plot.x_range, plot.y_range = (0.0, t_max), (0.0, top)
    marks = []
    thresholds = next(iter(runs.values()))["detail"]["thresholds"]
    levels = [*(thresholds[name] * limit for name, _ in STATES[1:]), limit]
    for (name, colour), (low, high) in zip(STATES[1:], itertools.pairwise(levels), strict=True):
        y0, y1 = plot.sy(high), plot.sy(low)
        marks.append(
            f'<rect class="band" x="{plot.left}" y="{y0:.1f}" width="{plot.inner_width}" '
            f'height="{y1 - y0:.1f}" fill="{colour}"/>'
            f'<text x="{plot.left + plot.inner_width - 4}" y="{y1 - 3:.1f}" '
            f'text-anchor="end">{name} ({thresholds[name]:.0%})</text>'
        )
    if limit:
        y = plot.sy(limit)
        marks.append(
            f'<path class="axis" d="M{plot.left},{y:.1f}H{plot.left + plot.inner_width}"/>'
            f'<text x="{plot.left + 4}" y="{y - 3:.1f}">budget {limit:g} MiB</text>'
        )
    for key, timeline in rows.items():
        points = [(row[0], float(row[3])) for row in timeline if row[3] is not None]
        marks.append(plot.line(points, COLOURS[key]))
    for i, (key, timeline) in enumerate(rows.items()):
        y = plot.strip_y(i)
        marks.extend(_state_strip(plot, timeline, y))
        marks.append(
            f'<text x="{plot.left - 6}" y="{y + 9:.1f}" text-anchor="end">'
            f"{esc('pooled' if key == 'pooled' else 'unpooled')}</text>"
        )
    legend = _legend(runs) + [(colour, name) for name, colour in STATES]
    return plot.svg("memory", marks, legend=legend)


def _state_strip(plot: Plot, timeline: Sequence[Sequence[Any]], y: float) -> list[str]:
    """Rectangles along the x axis, one per stretch of one memory state."""
    colours = dict(STATES)
    out = []
    for i, row in enumerate(timeline):
        end = timeline[i + 1][0] if i + 1 < len(timeline) else row[0] + 0.05
        x0, x1 = plot.sx(row[0]), plot.sx(min(end, plot.x_range[1]))
        state = row[4] or "normal"
        out.append(
            f'<rect class="mark" x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 0.5):.1f}" '
            f'height="{STRIP - 2}" fill="{colours.get(state, "#ced4da")}"><title>{esc(state)}'
            f"</title></rect>"
        )
    return out


def _legend(runs: dict[str, Any]) -> list[tuple[str, str]]:
    return [(COLOURS[key], LABELS[key]) for key in runs]
