"""Forward skill of the heatmap on REALISED liquidations, per bucket (bar).

For every bar k with realised long / short liquidation notional (`liq_long_notional`,
`liq_short_notional`, quote), the measure is the map FROZEN AT THE BAR'S OPEN (built from
bars < k only) crossed by the bar's realised range: long notional between the open and the
low, short notional between the open and the high (`heatmap.timeline`). It is ranked across
bars against the realised liquidations of the same bar (Spearman), beside baselines any
trader has without a map:
- `volume`: the bar's quote volume;
- `range`: (high - low) / open;
- `excursion`: the side's adverse excursion, (open - low) / open for longs, (high - open) /
  open for shorts.
With the near-price layer's in-bar term (`HeatmapParams.intra_weight`, as in
`heatmap.CALIBRATED_4H`) the bar's high/low range also enters, and nothing else of the bar.
The map never sees the realised columns (they are blanked before the run), so a score here
is forward skill of the book estimate given the range, not an echo of the target.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bot.data.bars import Bars
from bot.mechanics.brackets import Brackets
from bot.signals import heatmap as hm
from bot.signals.validation import spearman

SIDES = ("long", "short")
BASELINES = ("volume", "range", "excursion")


def frozen_estimates(bars: Bars, brackets: Brackets, p: hm.HeatmapParams = hm.HeatmapParams(),
                     levs: np.ndarray = hm.DEFAULT_LEVERAGES,
                     weights: np.ndarray = hm.DEFAULT_WEIGHTS) -> tuple[np.ndarray, np.ndarray]:
    """(est_long, est_short) per bar, quote notional, with realised liquidations hidden."""
    blind = Bars(bars.symbol, bars.interval_ms,
                 {k: v for k, v in bars.columns.items() if not k.startswith("liq_")})
    tl = hm.timeline(blind, brackets, p, levs, weights, nears=(0.01,))
    return tl["est_long"], tl["est_short"]


def _baselines(bars: Bars, side: str) -> dict[str, np.ndarray]:
    o, h, lo = bars["open"], bars["high"], bars["low"]
    qv = bars["quote_volume"] if bars.has("quote_volume") else bars["volume"] * bars.close
    exc = (o - lo) / o if side == "long" else (h - o) / o
    return {"volume": qv, "range": (h - lo) / o, "excursion": exc}


def bucket_skill(bars: Bars, brackets: Brackets, params: hm.HeatmapParams = hm.HeatmapParams(),
                 levs: np.ndarray = hm.DEFAULT_LEVERAGES,
                 weights: np.ndarray = hm.DEFAULT_WEIGHTS, start_ms: int | None = None,
                 end_ms: int | None = None,
                 est: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Per-side Spearman of the frozen-map measure and of the baselines against realised
    liquidations, over bars whose open is in [start_ms, end_ms) and whose realised value is
    finite. The map is run over ALL of `bars` (warm-up before `start_ms` included).
    `est` reuses precomputed `frozen_estimates` (the scoring window then only selects).

    Returns {"n": {side: buckets scored}, "map": {side: rho}, "<baseline>": {side: rho},
    "beats_baselines": {side: bool}}; a side without realised data scores NaN."""
    if est is None:
        est = frozen_estimates(bars, brackets, params, levs, weights)
    ts = bars.ts
    window = np.ones(len(bars), dtype=bool)
    if start_ms is not None:
        window &= ts >= start_ms
    if end_ms is not None:
        window &= ts < end_ms
    out: dict[str, Any] = {"n": {}, "map": {}, **{b: {} for b in BASELINES},
                           "beats_baselines": {}}
    for s, side in enumerate(SIDES):
        col = f"liq_{side}_notional"
        real = bars[col] if bars.has(col) else np.full(len(bars), np.nan)
        sel = window & np.isfinite(real) & np.isfinite(est[s])
        out["n"][side] = int(sel.sum())
        if sel.sum() < 3:
            out["map"][side] = float("nan")
            for b in BASELINES:
                out[b][side] = float("nan")
            out["beats_baselines"][side] = False
            continue
        out["map"][side] = spearman(est[s][sel], real[sel])
        base = _baselines(bars, side)
        for b in BASELINES:
            out[b][side] = spearman(base[b][sel], real[sel])
        out["beats_baselines"][side] = bool(all(out["map"][side] > out[b][side]
                                                for b in BASELINES))
    return out
