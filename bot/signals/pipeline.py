"""All signals over a bar series, for the CLI, the validation and the backtester.

Every part is stepped bar by bar by the one kernel of `bot.signals.stream` (the daemon
steps the same kernel per closed bar): heatmap -> positioning (uses the heatmap's
near-price masses) -> detectors (use the heatmap's consumption) -> risk inputs and the fill
window. This module runs it over a whole Bars container and slices the output rows back
into the `Signals` the strategies and the CLI read. Causality is tested on prefixes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from bot.data.bars import Bars
from bot.mechanics.brackets import Brackets
from bot.signals import detectors as dt
from bot.signals import heatmap as hm
from bot.signals import positioning as ps
from bot.signals import stream as sm


class Signals(NamedTuple):
    heatmap: hm.HeatmapRun
    positioning: np.ndarray   # (n, ps.N_COMPONENTS)
    detectors: np.ndarray     # (n, dt.N_DETECTOR)


def compute_stream(bars: Bars, brackets: Brackets, fill_window: int = 60,
                   p: hm.HeatmapParams = hm.HeatmapParams(),
                   levs: np.ndarray = hm.DEFAULT_LEVERAGES,
                   weights: np.ndarray = hm.DEFAULT_WEIGHTS, near: float = 0.03,
                   stride: int = 0, crowding: ps.CrowdingWeights = ps.CrowdingWeights(),
                   detector: dt.DetectorParams = dt.DetectorParams(),
                   x: np.ndarray | None = None) -> tuple[Signals, np.ndarray]:
    """Signals plus the full (n, stream.N_OUT) output matrix of the stream kernel: the
    backtester takes its risk signal matrix (columns O_SIG:O_SIG + en.N_SIG) and the fill
    windows (O_FILL + F_*) from the same run. Heatmap snapshots every `stride` bars when
    stride > 0. `x`: the bars' input rows when the caller already built them."""
    x = sm.bar_matrix(bars) if x is None else x
    kw: dict[str, Any] = dict(p=p, levs=levs, weights=weights, near=near, crowding=crowding,
              detector=detector, fill_window=fill_window)
    c = sm.config(bars.interval_ms, brackets, **kw)
    s = sm.new_state(float(x[0, sm.X_CLOSE]), bars.interval_ms, brackets, **kw)
    out, snaps, snap_lo = sm.run_snapshots(s, c, x, stride)
    hm.materialize(s.mass, s.meta)

    def cols(a: int, b: int) -> np.ndarray:
        return np.ascontiguousarray(out[:, a:b])

    h = sm.O_HEAT
    run = hm.HeatmapRun(*(np.ascontiguousarray(out[:, h + j]) for j in range(sm.H_CLUSTER_BELOW)),
                        cols(h + sm.H_CLUSTER_BELOW, h + sm.N_HEAT), s.mass, s.meta, snaps,
                        snap_lo)
    return Signals(run, cols(sm.O_POS, sm.O_POS + ps.N_COMPONENTS),
                   cols(sm.O_DET, sm.O_DET + dt.N_DETECTOR)), out


def compute(bars: Bars, brackets: Brackets, p: hm.HeatmapParams = hm.HeatmapParams(),
            levs: np.ndarray = hm.DEFAULT_LEVERAGES, weights: np.ndarray = hm.DEFAULT_WEIGHTS,
            near: float = 0.03, stride: int = 0,
            crowding: ps.CrowdingWeights = ps.CrowdingWeights(),
            detector: dt.DetectorParams = dt.DetectorParams()) -> Signals:
    """Heatmap, positioning and detectors for every bar of `bars`."""
    return compute_stream(bars, brackets, p=p, levs=levs, weights=weights, near=near,
                          stride=stride, crowding=crowding, detector=detector)[0]
