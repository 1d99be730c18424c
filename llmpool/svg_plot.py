"""Inline SVG plots for the demo's HTML report: an x/y plot area with linear
(or log) scales, ticks, lines, bars and legends, drawn as text.

Pure functions and small values; thread-safe.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

__all__ = [
    "BOTTOM",
    "HEIGHT",
    "LEFT",
    "RIGHT",
    "STRIP",
    "TOP",
    "WIDTH",
    "Plot",
    "Point",
    "esc",
    "linear_ticks",
    "log_ticks",
    "nice_floor",
    "thin",
]

WIDTH, HEIGHT = 680, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 14, 44
STRIP = 12  # the height of a memory state strip

Point = tuple[float, float]


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


class Plot:
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
            x_ticks if x_ticks is not None else linear_ticks(*self.x_range),
            y_ticks if y_ticks is not None else linear_ticks(*self.y_range),
        )
        total = self.height + (16 if legend else 0)
        keys = []
        x = self.left
        for colour, label in legend:
            keys.append(
                f'<rect x="{x}" y="{total - 12}" width="10" height="10" fill="{colour}"/>'
                f'<text x="{x + 14}" y="{total - 3}">{esc(label)}</text>'
            )
            x += 24 + 6 * len(label)
        keys_svg = "".join(keys)
        return (
            f'<svg class="chart" data-chart="{name}" viewBox="0 0 {WIDTH} {total}" '
            f'width="{WIDTH}" height="{total}" role="img" aria-label="{esc(name)} chart">'
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
                f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(label)}</text>'
            )
        for value, label in x_ticks:
            x = self.sx(value)
            out.append(
                f'<path class="axis" d="M{x:.1f},{bottom}v4"/>'
                f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{esc(label)}</text>'
            )
        out.append(
            f'<path class="axis" d="M{self.left},{TOP}V{bottom}H{self.left + self.inner_width}"/>'
            f'<text x="{self.left + self.inner_width / 2:.1f}" y="{bottom + 32}" '
            f'text-anchor="middle">{esc(self.x_label)}</text>'
        )
        if self.y_label:
            out.append(
                f'<text transform="translate(14,{TOP + self.inner_height / 2:.1f}) rotate(-90)" '
                f'text-anchor="middle">{esc(self.y_label)}</text>'
            )
        return "".join(out)


def linear_ticks(lo: float, hi: float, count: int = 5) -> list[tuple[float, str]]:
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


def log_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """Ticks at 1, 2 and 5 times powers of ten between *lo* and *hi* (values in
    log10 units, labels in the original unit)."""
    ticks = []
    for exponent in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10.0**exponent
            if lo <= value <= hi * 1.05:
                ticks.append((math.log10(value), f"{value:g}"))
    return ticks or [(math.log10(lo), f"{lo:.3g}")]


def nice_floor(value: float) -> float:
    """The largest 1, 2 or 5 times a power of ten at or below *value*."""
    power = 10.0 ** math.floor(math.log10(value))
    return max(m * power for m in (1, 2, 5) if m * power <= value * (1 + 1e-9))


def thin(points: list[Point], limit: int = 400) -> list[Point]:
    """At most about *limit* points, the last one kept (a CDF must reach 100 %)."""
    if len(points) <= limit:
        return points
    step = len(points) / limit
    kept = [points[int(i * step)] for i in range(limit)]
    return [*kept, points[-1]]
