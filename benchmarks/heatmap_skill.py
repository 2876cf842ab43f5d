"""Calibrate the heatmap on REAL 4h liquidations and report its forward skill.

Usage: python benchmarks/heatmap_skill.py [--quick] [--json FILE]

Data: /work/shared/data/coinglass_4h (see its README): BTCUSDT 4h OHLC + volume, aggregated
taker flow, OI, long/short account ratio, OI-weighted funding, and realised long/short
liquidations (calibration span 2024-11-13 .. 2025-05-12 only).

Protocol (docs/heatmap.md): the grid search (16,512 sets, about 25 min on one core; --quick
about a minute) ranks parameter sets, the near-price layer included (`near_frac` 0 = the
map without it), on the first four months of
the calibration span (IN-SAMPLE, 2024-11-13 .. 2025-03-13) by the mean over sides of the
Spearman of the frozen-map measure (`bot.signals.skill`), and the chosen set is reported on
the last two months (HELD-OUT, 2025-03-13 .. 2025-05-12), which played no part in the choice.
Beside the baselines it prints the chosen layer's shape with no map (`geometry`) and the best
set without the layer, so the map's own share of the skill can be read off. The later span
2025-05-18 .. 2025-11-14 has no realised liquidations (deliberately): only the measure
itself can be reported there, no skill. ETH: the span has no ETH price, so no ETH skill.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from bot.data.bars import Bars
from bot.data.importer import build_dataset
from bot.mechanics import brackets as br
from bot.signals import heatmap as hm
from bot.signals import skill

ROOT = Path("/work/shared/data/coinglass_4h")
CAL = ROOT / "4h_2024-11-13_to_2025-05-12"
LATER = ROOT / "4h_2025-05-18_to_2025-11-14"
H4 = 4 * 3_600_000
SPLIT_MS = int(np.datetime64("2025-03-13", "ms").astype(np.int64))

# leverage mix family: tiers log-spaced from 2x to LMAX, weights proportional to lev**-alpha
def mix(lmax: float, alpha: float, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    levs = np.geomspace(2.0, lmax, n)
    w = levs ** -alpha
    return levs, w / w.sum()


def load_bars(d: Path, oi_mode: str = "stable_base") -> Bars:
    """BTCUSDT 4h Bars of one vendor span through the vendor importer
    (`bot.data.importer.build_dataset`), read by the heatmap as `liqbot heatmap DATASET
    --timeline` reads an imported dataset (`heatmap.bar_inputs`: taker split from the
    aggregated taker notionals, funding the OI-weighted average, open interest as below).

    OI: the later span has aggregated OI (`open_interest`, base); the calibration span only
    stablecoin-margined OI (`oi_stablecoin`, unit undocumented: relative change only), read as
    a base quantity (`stable_base`, the library's fallback) or as quote value (`stable_usd`,
    base = value / close). The map is homogeneous in the OI scale, so only its relative
    changes matter."""
    files = [p for p in sorted(d.glob("*.csv")) if "ETH" not in p.name]
    bars = build_dataset(files, allow_gaps=True).bars
    if oi_mode == "stable_usd" and not bars.has("open_interest"):
        bars = bars.with_columns(open_interest=bars["oi_stablecoin"] / bars.close)
    return bars


def params(c: dict) -> hm.HeatmapParams:
    """HeatmapParams at 4h from a grid point (half-life in hours, churn per 4h bar; the
    near-price layer off unless the point sets it)."""
    return hm.params_for_interval(H4, hm.HeatmapParams(
        flow_weight=c["flow_weight"], ls_weight=c["ls_weight"], tilt_k=c["tilt_k"],
        churn_frac=c["churn"], near_frac=c.get("near_frac", 0.0),
        near_pow=c.get("near_pow", 1.5), near_max=c.get("near_max", 0.05),
        intra_weight=c.get("intra_weight", 0.0)), c["half_life_h"])


def geometry(bars: Bars, side: str, c: dict) -> np.ndarray:
    """The chosen layer's shape WITHOUT any map (no book, no OI): the side's excursion and
    the bar's range through the same profile, x ** near_pow, capped at near_max. It scores
    what the profile alone does, so the map's own share of the skill can be read off."""
    o, h, lo = bars["open"], bars["high"], bars["low"]
    exc = np.log(o / lo) if side == "long" else np.log(h / o)
    xm, a = c.get("near_max", 0.05), c.get("near_pow", 1.5)
    return (np.minimum(exc, xm) ** a + c.get("intra_weight", 0.0) *
            np.minimum(np.log(h / lo), xm) ** a)


def score(bars: Bars, b: br.Brackets, p: hm.HeatmapParams, c: dict) -> dict[str, dict]:
    levs, w = mix(c["lmax"], c["alpha"])
    est = skill.frozen_estimates(bars, b, p, levs, w)
    return {"in": skill.bucket_skill(bars, b, p, levs, w, end_ms=SPLIT_MS, est=est),
            "out": skill.bucket_skill(bars, b, p, levs, w, start_ms=SPLIT_MS, est=est),
            "all": skill.bucket_skill(bars, b, p, levs, w, est=est)}


def _window_rho(bars: Bars, x: np.ndarray, side: str, start_ms: int | None = None,
                end_ms: int | None = None) -> float:
    """Spearman of `x` against the side's realised liquidations over a window (the bars
    `skill.bucket_skill` scores: realised finite, not the first bar)."""
    real = bars[f"liq_{side}_notional"]
    sel = np.isfinite(real) & np.isfinite(x) & (np.arange(len(bars)) > 0)
    if start_ms is not None:
        sel &= bars.ts >= start_ms
    if end_ms is not None:
        sel &= bars.ts < end_ms
    return skill.spearman(x[sel], real[sel])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a small grid")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    b = br.shipped("binance", "BTCUSDT")
    t0 = time.time()
    bars_by_mode = {m: load_bars(CAL, m) for m in ("stable_usd", "stable_base")}
    grid = {
        "oi_mode": list(bars_by_mode),
        "lmax": [75.0, 125.0],
        "alpha": [2.0, 3.0],
        "half_life_h": [720.0, 2160.0] if not a.quick else [2160.0],
        "churn": [0.2, 0.5],
        "flow_weight": [0.0, 1.0] if not a.quick else [0.0],
        "ls_weight": [0.0, 0.3],
        "tilt_k": [1.0],
        # the near-price layer and the in-bar term (docs/heatmap.md); 0 = the old map
        "near_frac": [0.0, 3e-5, 1e-4, 3e-4, 1e-3] if not a.quick else [0.0, 3e-4],
        "near_pow": [1.0, 1.5, 2.0, 2.5] if not a.quick else [1.0, 1.5],
        "near_max": [0.05, 0.1] if not a.quick else [0.05],
        "intra_weight": [0.0, 0.1, 0.2, 0.3] if not a.quick else [0.0, 0.3],
    }
    results = []
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        c = dict(zip(keys, combo, strict=True))
        if c["near_frac"] == 0.0 and (c["near_pow"], c["near_max"], c["intra_weight"]) != \
                (1.0, 0.05, 0.0):
            continue                     # without a layer its shape is irrelevant
        r = score(bars_by_mode[c["oi_mode"]], b, params(c), c)
        obj = float(np.mean([r["in"]["map"][s] for s in skill.SIDES]))
        results.append((obj, c, r))
    results.sort(key=lambda x: -x[0])
    best_obj, best, r = results[0]
    print(f"{len(results)} parameter sets in {time.time() - t0:.0f}s; best in-sample mean "
          f"rho {best_obj:.3f}: {best}")
    for obj, c, rr in results[:8]:
        print(f"  {obj:.3f} held-out {np.mean([rr['out']['map'][s] for s in skill.SIDES]):.3f} {c}")
    no_layer = [x for x in results if x[1]["near_frac"] == 0.0][0]
    print(f"best WITHOUT the layer: in-sample {no_layer[0]:.3f} {no_layer[1]}")
    for part, kw in (("in", {"end_ms": SPLIT_MS}), ("out", {"start_ms": SPLIT_MS}), ("all", {})):
        s = r[part]
        bars = bars_by_mode[best["oi_mode"]]
        geo = {side: _window_rho(bars, geometry(bars, side, best), side, **kw)
               for side in skill.SIDES}
        nl = no_layer[2][part]["map"]
        print(f"{part:>4} n={s['n']}  " + "  ".join(
            f"{k}: L {s[k]['long']:.3f} S {s[k]['short']:.3f}" for k in ("map",) + skill.BASELINES)
            + f"  shape-only: L {geo['long']:.3f} S {geo['short']:.3f}"
            + f"  map-without-layer: L {nl['long']:.3f} S {nl['short']:.3f}")
    later = load_bars(LATER)
    levs, w = mix(best["lmax"], best["alpha"])
    p = params(best)
    el, es = skill.frozen_estimates(later, b, p, levs, w)
    exc = (later["open"] - later["low"]) / later["open"]
    ok = np.isfinite(el)
    oct10 = int(np.argmax(el[ok])) if ok.any() else 0
    print(f"later span {len(later)} bars: realised liquidations are deliberately absent, so "
          f"no skill can be measured; frozen-map measure nonzero in {np.mean(el[ok] > 0):.0%} "
          f"(long) / {np.mean(es[ok] > 0):.0%} (short) of bars, rank corr with the long "
          f"excursion {skill.spearman(el[ok], exc[ok]):.3f}; largest long estimate "
          f"{el[ok][oct10] / 1e6:.3g} (OI units) at bar {int(later.ts[ok][oct10])}")
    if a.json:
        a.json.write_text(json.dumps({"best": best, "objective": best_obj, "skill": r,
                                      "top": [(o, c) for o, c, _ in results[:20]]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
