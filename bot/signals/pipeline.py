"""All signals over a bar series, for the CLI, the validation and (later) the backtester.

Each part is a causal numba kernel stepped bar by bar; this module only wires them:
heatmap -> positioning (uses the heatmap's near-price masses) -> detectors (use the
heatmap's consumption). Causality is tested by recomputing on prefixes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bot.data.bars import Bars
from bot.mechanics.brackets import Brackets
from bot.signals import detectors as dt
from bot.signals import heatmap as hm
from bot.signals import positioning as ps


class Signals(NamedTuple):
    heatmap: hm.HeatmapRun
    positioning: np.ndarray   # (n, ps.N_COMPONENTS)
    detectors: np.ndarray     # (n, dt.N_DETECTOR)


def compute(bars: Bars, brackets: Brackets, p: hm.HeatmapParams = hm.HeatmapParams(),
            levs: np.ndarray = hm.DEFAULT_LEVERAGES, weights: np.ndarray = hm.DEFAULT_WEIGHTS,
            near: float = 0.03, stride: int = 0,
            crowding: ps.CrowdingWeights = ps.CrowdingWeights(),
            detector: dt.DetectorParams = dt.DetectorParams()) -> Signals:
    """Heatmap, positioning and detectors for every bar of `bars`."""
    run = hm.run(bars, brackets, p, levs, weights, near, stride)
    x = hm.bar_inputs(bars)
    n = len(bars)
    nan = np.full(n, np.nan)

    def col(name: str) -> np.ndarray:
        return np.ascontiguousarray(bars[name], dtype=np.float64) if bars.has(name) else nan

    bars_per_hour = max(1, 3_600_000 // bars.interval_ms)
    pos = ps.positioning_kernel(bars.ts, x["close"], x["funding"], col("premium_close"),
                                x["oi"], x["ls_ratio"], col("top_long_short_ratio"),
                                x["taker_buy"], x["volume"], run.near_long, run.near_short,
                                crowding, bars_per_hour)
    liq = x["liq_long"] + x["liq_short"] if bars.has("liq_long_notional") else nan
    det = dt.detector_kernel(x["close"], x["quote_volume"], liq,
                             run.consumed_long + run.consumed_short,
                             run.long_total + run.short_total, x["oi"], x["funding"], detector)
    return Signals(run, pos, det)
