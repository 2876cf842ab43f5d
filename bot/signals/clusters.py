"""Liquidation clusters: the dense levels of the heatmap, per side.

A cluster is a run of bins around local maxima whose mass exceeds the side's `percentile`
of non-empty bins; maxima closer than `merge_pct` are merged into one cluster. Each cluster
reports its mass-weighted price, its near and far edges (the far edge is what a position
must clear to sit beyond the cluster), notional, share of the side's total, and distance
from the mark in percent and in ATRs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from bot.signals.heatmap import LONG, M_LO, M_WIDTH


@njit(cache=True)
def cluster_kernel(side_mass: np.ndarray, lo: float, width: float, percentile: float,
                   merge_bins: int) -> np.ndarray:
    """Clusters of one side as rows (price, notional, low_price, high_price)."""
    nb = len(side_mass)
    nz = side_mass[side_mass > 0.0]
    if len(nz) == 0:
        return np.zeros((0, 4))
    thr = np.percentile(nz, percentile)
    peaks = []
    for b in range(nb):
        m = side_mass[b]
        if m <= 0.0 or m < thr:
            continue
        left = side_mass[b - 1] if b > 0 else 0.0
        right = side_mass[b + 1] if b < nb - 1 else 0.0
        if m >= left and m >= right:
            peaks.append(b)
    out = np.zeros((len(peaks), 4))
    n = 0
    i = 0
    half = max(merge_bins // 2, 1)
    while i < len(peaks):
        j = i
        while j + 1 < len(peaks) and peaks[j + 1] - peaks[j] <= merge_bins:
            j += 1
        a = max(peaks[i] - half, 0)
        z = min(peaks[j] + half, nb - 1)
        tot = 0.0
        wsum = 0.0
        for b in range(a, z + 1):
            tot += side_mass[b]
            wsum += side_mass[b] * (lo + (b + 0.5) * width)
        if tot > 0.0:
            out[n, 0] = np.exp(wsum / tot)
            out[n, 1] = tot
            out[n, 2] = np.exp(lo + a * width)
            out[n, 3] = np.exp(lo + (z + 1) * width)
            n += 1
        i = j + 1
    return out[:n]


@dataclass(frozen=True)
class Cluster:
    """One cluster. `side` is the side that would be liquidated ("long" levels lie below
    the mark). Prices quote/base, notional quote."""

    side: str
    price: float
    notional: float
    share: float
    distance_pct: float
    distance_atr: float
    low: float
    high: float

    @property
    def far_edge(self) -> float:
        """The edge farther from the mark: below a long cluster's low, above a short's high."""
        return self.low if self.side == "long" else self.high


def find_clusters(mass: np.ndarray, meta: np.ndarray, mark: float, atr: float,
                  percentile: float = 90.0, merge_pct: float = 0.003) -> list[Cluster]:
    """Clusters of both sides, densest first within each side."""
    width = float(meta[M_WIDTH])
    merge_bins = max(1, int(round(merge_pct / width)))
    out: list[Cluster] = []
    for s, name in ((LONG, "long"), (1 - LONG, "short")):
        rows = cluster_kernel(np.ascontiguousarray(mass[s]), float(meta[M_LO]), width, percentile,
                              merge_bins)
        total = float(mass[s].sum())
        for price, notional, low, high in sorted(rows.tolist(), key=lambda r: -r[1]):
            dist = price / mark - 1.0
            out.append(Cluster(name, price, notional, notional / total if total else 0.0,
                               100.0 * dist, abs(price - mark) / atr if atr > 0 else np.nan,
                               low, high))
    return out
