"""The ``llmpool demo --html`` report: one self-contained HTML page of charts.

Everything is inline: SVG drawn here, CSS in a ``<style>`` element, no
script, no font, no image and no link to anything outside the file, so the
page opens anywhere (offline, attached to a ticket) and reads the same. The
data comes from :func:`llmpool.demo.run_demo` with ``detail=True``.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

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

WIDTH, HEIGHT = 680, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 14, 44
STRIP = 12  # the height of a memory state strip

Point = tuple[float, float]


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
    return _PAGE.format(
        title="llmpool demo report",
        heading=_esc(_heading(report)),
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


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _heading(report: dict[str, Any]) -> str:
    opts, server = report["options"], report["server"]
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
        f'<section class="chart-section">\n<h2>{_esc(title)}</h2>\n'
        f'<p class="note">{_esc(note)}</p>\n{svg}\n</section>'
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
        f'<th><span class="key" style="background:{COLOURS[k]}"></span>{_esc(LABELS[k])}</th>'
        for k in runs
    )
    body = "".join(
        f"<tr><th>{_esc(label)}</th>"
        + "".join(f'<td class="num">{_esc(cell(run))}</td>' for run in runs.values())
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
    low = _nice_floor(min(every))
    plot = _Plot(
        x=(math.log10(low), math.log10(max(every) * 1.05 + 1e-9)),
        y=(0.0, 1.0),
        x_label="latency (ms, log scale)",
        y_label="share of calls",
    )
    marks = [
        plot.line([(math.log10(x), y) for x, y in _thin(points)], COLOURS[key], step=True)
        for key, points in series.items()
    ]
    return plot.svg(
        "latency",
        marks,
        x_ticks=_log_ticks(low, max(every)),
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
    plot = _Plot(x=(0.0, t_max), y=(0.0, y_max * 1.08), x_label="seconds", y_label="connections")
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
    plot = _Plot(x=(0.0, t_max), y=(0.0, y_max * 1.08), x_label="seconds", y_label="calls/s")
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
    plot = _Plot(
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
            f'text-anchor="end">{_esc(name)}</text>'
        )
        for key in runs:
            n = kinds[name].get(key, 0)
            w = plot.sx(n) - plot.left
            marks.append(
                f'<rect class="mark" x="{plot.left}" y="{y:.1f}" width="{max(w, 0.0):.1f}" '
                f'height="{bar - 2}" fill="{COLOURS[key]}"><title>{_esc(LABELS[key])}: '
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
    plot = _Plot(x=(0.0, 1.0), y=(0.0, 1.0), x_label="seconds", y_label="MiB", strips=len(runs))
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
            f"{_esc('pooled' if key == 'pooled' else 'unpooled')}</text>"
        )
    legend = _legend(runs) + [(colour, name) for name, colour in STATES]
    return plot.svg("memory", marks, legend=legend)


def _state_strip(plot: _Plot, timeline: Sequence[Sequence[Any]], y: float) -> list[str]:
    """Rectangles along the x axis, one per stretch of one memory state."""
    colours = dict(STATES)
    out = []
    for i, row in enumerate(timeline):
        end = timeline[i + 1][0] if i + 1 < len(timeline) else row[0] + 0.05
        x0, x1 = plot.sx(row[0]), plot.sx(min(end, plot.x_range[1]))
        state = row[4] or "normal"
        out.append(
            f'<rect class="mark" x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 0.5):.1f}" '
            f'height="{STRIP - 2}" fill="{colours.get(state, "#ced4da")}"><title>{_esc(state)}'
            f"</title></rect>"
        )
    return out


def _legend(runs: dict[str, Any]) -> list[tuple[str, str]]:
    return [(COLOURS[key], LABELS[key]) for key in runs]


# --------------------------------------------------------------------------- drawing


class _Plot:
    """An x/y plot area in an SVG of a fixed size, with linear scales."""

    def __init__(
        self,
        *,
        x: tuple[float, float],
        y: tuple[float, float],
        x_label: str,
        y_label: str,
        height: int = HEIGHT,
        left: int = LEFT,
        strips: int = 0,
    ) -> None:
        self.x_range, self.y_range = x, y
        self.x_label, self.y_label = x_label, y_label
        self.left = left
        self.height = height + (strips * STRIP + 4 if strips else 0)
        self.inner_width = WIDTH - left - RIGHT
        self.inner_height = height - TOP - BOTTOM

    def strip_y(self, index: int) -> float:
        """The top of strip *index* (0 first), below the x axis and its title."""
        return TOP + self.inner_height + BOTTOM + index * STRIP

    def sx(self, value: float) -> float:
        lo, hi = self.x_range
        return self.left + (value - lo) / ((hi - lo) or 1.0) * self.inner_width

    def sy(self, value: float) -> float:
        lo, hi = self.y_range
        return TOP + self.inner_height - (value - lo) / ((hi - lo) or 1.0) * self.inner_height

    def line(self, points: Iterable[Point], colour: str, *, step: bool = False) -> str:
        """A polyline through *points* (a staircase with *step*) as a path."""
        parts: list[str] = []
        previous_y: float | None = None
        for x, y in points:
            px, py = self.sx(x), self.sy(y)
            if not parts:
                parts.append(f"M{px:.1f},{py:.1f}")
            elif step and previous_y is not None:
                parts.append(f"H{px:.1f}V{py:.1f}")
            else:
                parts.append(f"L{px:.1f},{py:.1f}")
            previous_y = py
        if not parts:
            return ""
        return (
            f'<path class="mark" d="{"".join(parts)}" fill="none" stroke="{colour}" '
            f'stroke-width="2" stroke-linejoin="round"/>'
        )

    def svg(
        self,
        name: str,
        marks: Sequence[str],
        *,
        x_ticks: Sequence[tuple[float, str]] | None = None,
        y_ticks: Sequence[tuple[float, str]] | None = None,
        legend: Sequence[tuple[str, str]] = (),
    ) -> str:
        axes = self._axes(
            x_ticks if x_ticks is not None else _linear_ticks(*self.x_range),
            y_ticks if y_ticks is not None else _linear_ticks(*self.y_range),
        )
        total = self.height + (16 if legend else 0)
        keys = []
        x = self.left
        for colour, label in legend:
            keys.append(
                f'<rect x="{x}" y="{total - 12}" width="10" height="10" fill="{colour}"/>'
                f'<text x="{x + 14}" y="{total - 3}">{_esc(label)}</text>'
            )
            x += 24 + 6 * len(label)
        keys_svg = "".join(keys)
        return (
            f'<svg class="chart" data-chart="{name}" viewBox="0 0 {WIDTH} {total}" '
            f'width="{WIDTH}" height="{total}" role="img" aria-label="{_esc(name)} chart">'
            f"{axes}{''.join(marks)}{keys_svg}</svg>"
        )

    def _axes(
        self, x_ticks: Sequence[tuple[float, str]], y_ticks: Sequence[tuple[float, str]]
    ) -> str:
        bottom = TOP + self.inner_height
        out = []
        for value, label in y_ticks:
            y = self.sy(value)
            out.append(
                f'<path class="grid" d="M{self.left},{y:.1f}H{self.left + self.inner_width}"/>'
                f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end">{_esc(label)}</text>'
            )
        for value, label in x_ticks:
            x = self.sx(value)
            out.append(
                f'<path class="axis" d="M{x:.1f},{bottom}v4"/>'
                f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{_esc(label)}</text>'
            )
        out.append(
            f'<path class="axis" d="M{self.left},{TOP}V{bottom}H{self.left + self.inner_width}"/>'
            f'<text x="{self.left + self.inner_width / 2:.1f}" y="{bottom + 32}" '
            f'text-anchor="middle">{_esc(self.x_label)}</text>'
        )
        if self.y_label:
            out.append(
                f'<text transform="translate(14,{TOP + self.inner_height / 2:.1f}) rotate(-90)" '
                f'text-anchor="middle">{_esc(self.y_label)}</text>'
            )
        return "".join(out)


def _linear_ticks(lo: float, hi: float, count: int = 5) -> list[tuple[float, str]]:
    span = hi - lo
    if span <= 0:
        return [(lo, f"{lo:g}")]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    value = first
    while value <= hi + 1e-9:
        ticks.append((value, f"{value:g}"))
        value = round(value + step, 10)
    return ticks


def _log_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """Ticks at 1, 2 and 5 times powers of ten between *lo* and *hi* (values in
    log10 units, labels in the original unit)."""
    ticks = []
    for exponent in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10.0**exponent
            if lo <= value <= hi * 1.05:
                ticks.append((math.log10(value), f"{value:g}"))
    return ticks or [(math.log10(lo), f"{lo:.3g}")]


def _nice_floor(value: float) -> float:
    """The largest 1, 2 or 5 times a power of ten at or below *value*."""
    power = 10.0 ** math.floor(math.log10(value))
    return max(m * power for m in (1, 2, 5) if m * power <= value * (1 + 1e-9))


def _thin(points: list[Point], limit: int = 400) -> list[Point]:
    """At most about *limit* points, the last one kept (a CDF must reach 100 %)."""
    if len(points) <= limit:
        return points
    step = len(points) / limit
    kept = [points[int(i * step)] for i in range(limit)]
    return [*kept, points[-1]]
