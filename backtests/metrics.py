"""Performance figures of a backtest run (quote currency; returns as fractions).

Memory: an equity curve is read in CHUNK-bar pieces, so it may be a strided column of the
per-bar records (no full-length copy); `first` prepends the opening equity. The figures are
bit for bit those of the plain whole-array numpy expressions (the elementwise steps are
the same per element; sums and the standard deviation run over the same full array).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

MINUTES_PER_YEAR = 525_600
#: Sharpe and Sortino annualised from fewer days than this are flagged as indicative (a
#: 49-bar run read -104)
SHORT_DAYS = 30
#: curve points per piece: 512 KB of float64 temporaries
CHUNK = 65_536


def _pieces(equity: np.ndarray, first: float | None,
            overlap: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(start, curve[start:start + CHUNK + overlap]) of the curve [first, *equity] (or
    `equity` when `first` is None), as fresh contiguous float64 arrays."""
    chunk = CHUNK
    head = 0 if first is None else 1
    n = len(equity) + head
    for i in range(0, max(n - overlap, 0), chunk):
        j = min(n, i + chunk + overlap)
        piece = np.empty(j - i)
        if i < head:
            piece[0] = first
            piece[1:] = equity[: j - head]
        else:
            piece[:] = equity[i - head: j - head]
        yield i, piece


def max_drawdown(equity: np.ndarray, first: float | None = None) -> float:
    """Largest peak-to-trough fall of the equity curve ([first, *equity] when `first` is
    given), as a positive fraction; bars whose running peak is not positive count 0."""
    worst = None
    top = None                                   # running peak before this piece
    for _, dd in _pieces(equity, first):
        np.maximum(dd, 0.0, out=dd)
        peak = np.maximum.accumulate(dd)
        if top is not None:
            np.maximum(peak, top, out=peak)
        top = peak[-1]
        with np.errstate(divide="ignore", invalid="ignore"):   # peak 0: set to 0 below
            np.divide(dd, peak, out=dd)
        np.subtract(1.0, dd, out=dd)
        dd[~(peak > 0)] = 0.0
        m = dd.max()
        worst = m if worst is None else np.maximum(worst, m)    # NaN as dd.max() has it
    return 0.0 if worst is None else float(worst)


def _return_pieces(equity: np.ndarray,
                   first: float | None) -> Iterator[tuple[int, np.ndarray]]:
    """(start, returns[start:start + CHUNK]) of the curve (see `returns`)."""
    for i, e in _pieces(equity, first, overlap=1):
        np.maximum(e, 1e-12, out=e)
        r = np.subtract(e[1:], e[:-1])
        r /= e[:-1]
        yield i, r


def returns(equity: np.ndarray, first: float | None = None) -> np.ndarray:
    """Per-bar simple returns of the curve, each price floored at 1e-12:
    `np.diff(e) / e[:-1]` with `e = np.maximum(curve, 1e-12)`, element for element."""
    head = 0 if first is None else 1
    r = np.empty(max(len(equity) + head - 1, 0))
    for i, piece in _return_pieces(equity, first):
        r[i: i + len(piece)] = piece
    return r


def ratios(equity: np.ndarray, bars_per_year: float,
           first: float | None = None) -> tuple[float, float]:
    """(Sharpe, Sortino) of per-bar simple returns (`returns`), annualised, zero
    risk-free rate. The downside returns are gathered piece by piece before the returns
    array exists; the standard deviation is numpy's (`r.std()`: the mean, then the sum of
    squared deviations, over the whole array) computed in place in the returns array."""
    n = len(equity) + (0 if first is None else 1) - 1
    if n < 2:
        return 0.0, 0.0
    k = sum(int(np.count_nonzero(p < 0)) for _, p in _return_pieces(equity, first))
    down = np.empty(k)                                   # r[r < 0], in order
    j = 0
    for _, p in _return_pieces(equity, first):
        neg = p[p < 0]
        down[j: j + len(neg)] = neg
        j += len(neg)
    dsum = np.square(down, out=down).sum() if k else None   # = (down ** 2).sum()
    del down
    r = returns(equity, first)
    mean = r.mean()
    std = _std_in_place(r)
    if std == 0:
        return 0.0, 0.0
    scale = np.sqrt(bars_per_year)
    sharpe = mean / std * scale
    dstd = np.sqrt(dsum / n) if dsum is not None else 0.0
    sortino = mean / dstd * scale if dstd > 0 else 0.0
    return float(sharpe), float(sortino)


def _std_in_place(r: np.ndarray) -> np.floating:
    """`r.std()`, bit for bit (numpy's `_var`: the mean from the sum over the array, the
    deviations squared, their sum, divided by n, the root), overwriting `r` with the
    squared deviations instead of allocating them."""
    mean = np.add.reduce(r, keepdims=True)
    np.true_divide(mean, len(r), out=mean)
    np.subtract(r, mean, out=r)
    np.square(r, out=r)
    var = np.add.reduce(r)
    return np.sqrt(var.dtype.type(var / len(r)))


def short_span_note(days: float, what: str = "day(s) of bars") -> str | None:
    """The warning printed beside Sharpe and Sortino annualised from fewer than SHORT_DAYS
    days (a few days' ratio, scaled by sqrt(365 days), swings with one bar), else None."""
    if days >= SHORT_DAYS:
        return None
    return (f"Sharpe and Sortino are annualised from {days:.3g} {what}: indicative only on "
            f"fewer than {SHORT_DAYS} days")
