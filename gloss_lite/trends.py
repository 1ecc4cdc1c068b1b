"""Does a short series rise, fall, or neither? A slope and its interval decide.

Used in ``notebooks/08_the_graph_beyond_one_batch.ipynb`` wherever a sentence says a
measurement rose or fell (a loss over training steps, a spread over graph sizes). Comparing
the first value with the last reads noise as a trend; instead fit the least-squares line
``y = a + b x`` and its two-sided t-interval,

    b +- t_{1 - alpha/2, n-2} * s / sqrt(sum_i (x_i - mean x)^2),
    s^2 = sum_i (y_i - a - b x_i)^2 / (n - 2),

and call the series falling only when the whole interval is below 0, rising only when it is
above 0, and undecided otherwise (always with fewer than three points).

Imports numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Trend", "trend"]


@dataclass(frozen=True)
class Trend:
    """The fitted slope, its interval and the verdict: "falls", "rises" or "no clear trend"."""

    slope: float
    low: float
    high: float
    verdict: str

    def describe(self, what: str, per: str) -> str:
        """One sentence: the verdict, the slope per ``per`` and its interval."""
        verb = {"falls": "falls", "rises": "rises"}.get(self.verdict, "shows no clear trend")
        if np.isfinite(self.low):
            interval = f"95% interval {self.low:+.3g} to {self.high:+.3g}"
        else:
            interval = "two points give no interval"
        return f"{what} {verb}: slope {self.slope:+.3g} per {per} ({interval})."

    def contains(self, value: float) -> bool:
        """Whether ``value`` (e.g. a predicted slope) lies inside the interval."""
        return self.low <= value <= self.high


def trend(x, y, level: float = 0.95) -> Trend:
    """The least-squares slope of ``y`` on ``x`` with its ``level`` t-interval, and the verdict."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of one length, got shapes {x.shape} and {y.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("a slope needs at least two distinct x values")
    centred = x - x.mean()
    slope = float((centred * (y - y.mean())).sum() / (centred**2).sum())
    if len(x) < 3:
        return Trend(slope, -np.inf, np.inf, "no clear trend")
    residuals = y - y.mean() - slope * centred
    spread = np.sqrt((residuals**2).sum() / (len(x) - 2) / (centred**2).sum())
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 2) * spread)
    low, high = slope - half, slope + half
    verdict = "falls" if high < 0 else "rises" if low > 0 else "no clear trend"
    return Trend(slope, low, high, verdict)
