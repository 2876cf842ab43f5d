"""Performance figures of a backtest run (quote currency; returns as fractions)."""

from __future__ import annotations

import numpy as np

MINUTES_PER_YEAR = 525_600


def max_drawdown(equity: np.ndarray) -> float:
    """Largest peak-to-trough fall of the equity curve, as a positive fraction. Works in
    place on two full-length arrays (a year of 1m bars: 4 MB each)."""
    if len(equity) == 0:
        return 0.0
    dd = np.maximum(equity, 0.0)
    peak = np.maximum.accumulate(dd)
    with np.errstate(divide="ignore", invalid="ignore"):   # bars with peak 0 are set to 0
        np.divide(dd, peak, out=dd)
    np.subtract(1.0, dd, out=dd)
    dd[~(peak > 0)] = 0.0
    return float(dd.max())


def ratios(equity: np.ndarray, bars_per_year: float) -> tuple[float, float]:
    """(Sharpe, Sortino) of per-bar simple returns, annualised, zero risk-free rate."""
    e = np.maximum(equity, 1e-12)
    r = np.diff(e)
    r /= e[:-1]
    del e
    if len(r) < 2 or r.std() == 0:
        return 0.0, 0.0
    sharpe = r.mean() / r.std() * np.sqrt(bars_per_year)
    down = r[r < 0]
    dstd = np.sqrt((down ** 2).sum() / len(r)) if len(down) else 0.0
    sortino = r.mean() / dstd * np.sqrt(bars_per_year) if dstd > 0 else 0.0
    return float(sharpe), float(sortino)
