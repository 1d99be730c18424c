"""The one percentile definition of llmpool: a value module, importing nothing of llmpool.

The pool's histograms, the plugins' hook timings and the ``llmpool demo``
report all summarise with :func:`percentile`, so a p99 means the same thing
wherever it is shown.

The definition is **linear interpolation between closest ranks** (the
"inclusive" method of :func:`statistics.quantiles`, numpy's default
``linear`` method, Excel's ``PERCENTILE.INC``): for *n* ascending values
``x[0] .. x[n-1]`` and a fraction *q* in [0, 1], the position is
``h = q * (n - 1)`` and the percentile is
``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
So p0 is the minimum, p100 the maximum, p50 of an even count the mean of the
middle two; an empty list gives 0.0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["percentile", "percentiles"]


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The *fraction* (0..1) percentile of the ascending *ordered* values,
    by linear interpolation between closest ranks (0.0 when empty).

    *fraction* outside [0, 1] is clamped to it.
    """
    n = len(ordered)
    if n == 0:
        return 0.0
    position = min(1.0, max(0.0, fraction)) * (n - 1)
    below = math.floor(position)
    if below >= n - 1:
        return float(ordered[n - 1])
    low = ordered[below]
    return float(low + (position - below) * (ordered[below + 1] - low))


def percentiles(values: Iterable[float], fractions: Sequence[float]) -> list[float]:
    """The percentiles of unordered *values* at each of *fractions* (sorted once)."""
    ordered = sorted(values)
    return [percentile(ordered, q) for q in fractions]
