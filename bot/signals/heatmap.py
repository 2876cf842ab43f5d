"""Liquidation heatmap estimator: where leveraged positions would be force-closed.

State (numba arrays owned by the caller, stepped one bar at a time by `update`, the same
kernel for the backtester and the daemon):
- `mass[0, b]` / `mass[1, b]`: quote notional of LONG / SHORT positions whose liquidation
  price falls in bin b. Bins are log-spaced: bin b covers
  [exp(lo + b w), exp(lo + (b+1) w)), w = bin width (default 0.001 = 0.1%).
- `meta[M_*]`: grid origin `lo`, bookkeeping totals (added, removed, consumed per side,
  decayed), previous open interest, realised liquidations per side, confidence, and the
  lazy per-side scale, stored totals and occupied bounds that make a bar update O(1) in
  the number of bins (decay and proportional removal multiply a scale; consumption scans
  only bins between the mark and the outermost occupied level).

One bar, in this order, using only that bar's values (known at its close):
1. consume: long levels at or above the bar's MARK low, short levels at or below its MARK
   high, are liquidated (removed, counted as consumed; the realised-liquidation feed, when
   present, is kept beside it as its own series);
2. decay: every level loses exp(-ln2 / half_life) per bar: closes open interest cannot see
   (a long closing against a short opening leaves OI unchanged);
3. open interest: dOI > 0 adds dOI x close of new positions, split long/short by the bar's
   taker-buy share (blended with the long/short account ratio when present), spread over
   the leverage mix; each tier's liquidation price is Binance's bracketed formula from
   `bot.mechanics` (the account's own function) for a position of `typical_notional`.
   When funding is stretched the mix tilts toward high leverage. dOI < 0 removes dOI x
   close, taken from the side that taker flow says is closing (sells close longs),
   proportionally across its levels;
   without open interest (NaN), a volume proxy adds `proxy_frac` x quote volume x |taker
   imbalance| to the side the imbalance favours, and confidence drops to 0.5;
4. re-centre the grid on the close when it drifts within `recenter_margin` bins of an
   edge: mass that would fall off is folded into the edge bins, so nothing is lost;
5. near-price layer (`near_frac` > 0, off by default): positions too close to price for
   any discrete tier (aged positions drifting toward their level, margin continuum) are
   modelled as `near_frac` x the last open-interest notional, split like new OI, with a
   smooth profile (share within log distance x of the close = (x / near_max) ** near_pow).
   It is an overlay re-set at every close (`M_NEAR_*`), read by `side_mass_between` /
   `side_mass_near`, not stored in the bins nor counted in the bookkeeping.
Bookkeeping invariant (tested to 1e-9): total mass = added - removed - consumed - decayed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numba import njit

from bot.data.grid import log_bin
from bot.mechanics.liquidation import binance_liquidation_price_bracketed

LONG, SHORT = 0, 1
(M_LO, M_WIDTH, M_ADDED, M_REMOVED, M_CONSUMED_LONG, M_CONSUMED_SHORT, M_DECAYED, M_PREV_OI,
 M_REALIZED_LONG, M_REALIZED_SHORT, M_CONFIDENCE, M_BARS, M_SCALE_LONG, M_SCALE_SHORT,
 M_STORED_LONG, M_STORED_SHORT, M_HI_LONG, M_LO_SHORT, M_VOL_REF, M_NEAR_LONG, M_NEAR_SHORT,
 M_NEAR_REF, M_NEAR_POW, M_NEAR_MAX) = range(24)
N_META = 24
RESYNC_BARS = 4096        # stored totals are recomputed exactly this often (float drift)


class HeatmapParams(NamedTuple):
    """Estimator settings (floats for numba). Defaults documented in docs/heatmap.md."""

    bin_width: float = 0.001          # log width of a bin (0.1%)
    n_bins: int = 2000                # +-100% around the centre at 0.1%
    half_life_bars: float = 1440.0    # unseen closes: half the mass gone after a day of 1m bars
    recenter_margin: int = 200        # re-centre when the close is this close to an edge
    proxy_frac: float = 0.05          # share of quote volume x |imbalance| opening positions
    tilt_k: float = 1.0               # high-leverage tilt per unit of |funding| / 0.05%
    typical_notional: float = 10_000.0  # position size used to pick the bracket (quote)
    ls_weight: float = 0.3            # weight of the long/short account ratio in the split
    cluster_window: int = 5           # bins summed to call a level a cluster (0.5%)
    cluster_share: float = 0.05       # a cluster holds at least this share of its side
    cluster_search: int = 150         # bins scanned each side of the mark for the nearest
    reach_sigma_mult: float = 0.5     # horizon sigma multiplier of the reach probability,
    #   chosen on synthetic seeds 6-10 (held out from the reported seeds 1-5) among
    #   0.35 / 0.5 / 0.7 / 1.0 (docs/heatmap.md)
    flow_weight: float = 1.0          # how far taker imbalance moves the long/short split of
    #   OI changes away from 50/50 (0: every OI change is split evenly, 1: by taker share)
    entry_points: int = 1             # new entries spread over this many prices of the bar's
    #   range (1: all at the close)
    churn_frac: float = 0.0           # share of the book re-opened at constant OI per bar at
    #   average volume (scaled by the bar's quote volume / its decayed average, capped at 5x)
    near_frac: float = 0.0            # near-price layer: share of the open-interest notional
    #   (last OI x close) whose liquidation sits within `near_max` of the close (0: none)
    near_pow: float = 1.5             # layer profile: share within log distance x of the
    #   close is (x / near_max) ** near_pow
    near_max: float = 0.05            # layer extent (log distance from the close)
    intra_weight: float = 0.0         # frozen reading: share of the layer, re-opened at the
    #   bar's extremes, that the bar's own range liquidates (`timeline_kernel`)


DEFAULT_LEVERAGES = np.array([5.0, 10.0, 25.0, 50.0, 100.0])
DEFAULT_WEIGHTS = np.array([0.2, 0.3, 0.25, 0.15, 0.1])


def new_state(center_price: float, p: HeatmapParams = HeatmapParams()) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """Empty (mass, meta) with the grid centred on `center_price`.

    `mass` is stored scaled: the true notional of side s in bin b is
    mass[s, b] x meta[M_SCALE_LONG + s]. Decay and proportional removal only touch the
    scale, which keeps a bar update O(1) in the number of bins; `materialize` folds the
    scale back in (done at the end of `run`).
    """
    mass = np.zeros((2, p.n_bins))
    meta = np.zeros(N_META)
    meta[M_WIDTH] = p.bin_width
    meta[M_LO] = np.log(center_price) - p.n_bins // 2 * p.bin_width
    meta[M_PREV_OI] = np.nan
    meta[M_CONFIDENCE] = 1.0
    meta[M_SCALE_LONG] = 1.0
    meta[M_SCALE_SHORT] = 1.0
    meta[M_HI_LONG] = -1.0
    meta[M_LO_SHORT] = p.n_bins
    meta[M_NEAR_POW] = p.near_pow
    meta[M_NEAR_MAX] = p.near_max
    return mass, meta


@njit(cache=True)
def materialize(mass: np.ndarray, meta: np.ndarray) -> None:
    """Fold the lazy scales into `mass` (true notional per bin afterwards)."""
    for s in range(2):
        sc = meta[M_SCALE_LONG + s]
        if sc != 1.0:
            for b in range(mass.shape[1]):
                mass[s, b] *= sc
            meta[M_STORED_LONG + s] *= sc
            meta[M_SCALE_LONG + s] = 1.0


@njit(cache=True)
def _resync(mass: np.ndarray, meta: np.ndarray) -> None:
    for s in range(2):
        total = 0.0                      # in bin order, as `mass[s].sum()`
        for b in range(mass.shape[1]):
            total += mass[s, b]
        meta[M_STORED_LONG + s] = total
        if meta[M_SCALE_LONG + s] < 1e-100:          # renormalise before underflow
            sc = meta[M_SCALE_LONG + s]
            for b in range(mass.shape[1]):
                mass[s, b] *= sc
            meta[M_STORED_LONG + s] *= sc
            meta[M_SCALE_LONG + s] = 1.0


@njit(cache=True)
def side_total(meta: np.ndarray, s: int) -> float:
    """True notional of one side."""
    return meta[M_STORED_LONG + s] * meta[M_SCALE_LONG + s]


@njit(cache=True)
def bin_of(price: float, meta: np.ndarray, nb: int) -> int:
    """Bin index of a price, clamped to the grid."""
    return log_bin(np.log(price), meta[M_LO], meta[M_WIDTH], nb)


@njit(cache=True)
def bin_prices(meta: np.ndarray, nb: int) -> np.ndarray:
    """Geometric centre of every bin (quote/base)."""
    return np.exp(meta[M_LO] + (np.arange(nb) + 0.5) * meta[M_WIDTH])


@njit(cache=True)
def _recenter(mass: np.ndarray, meta: np.ndarray, close: float, margin: int) -> None:
    """Re-centre the grid on `close` when it lies within `margin` bins of an edge: every
    level moves by the same number of bins, in place (no scratch grid, no array
    assignment); mass that would fall off an edge is folded into the edge bin, summed in
    bin order from 0.0."""
    nb = mass.shape[1]
    b = int(np.floor((np.log(close) - meta[M_LO]) / meta[M_WIDTH]))
    if margin <= b < nb - margin:
        return
    k = b - nb // 2                      # shift so the close sits in the middle
    for s in range(2):
        edge = 0.0
        if k >= 0:                       # levels move down k bins: 0..k fold into bin 0
            for src in range(min(k, nb - 1) + 1):
                edge += mass[s, src]
            for j in range(1, nb - k):   # ascending: each source is read before its write
                mass[s, j] = 0.0 + mass[s, j + k]
            for j in range(max(nb - k, 1), nb):
                mass[s, j] = 0.0
            mass[s, 0] = edge
        else:                            # levels move up -k bins: the top -k + 1 fold
            for src in range(max(nb - 1 + k, 0), nb):
                edge += mass[s, src]
            for j in range(nb - 2, -k - 1, -1):     # descending, for the same reason
                mass[s, j] = 0.0 + mass[s, j + k]
            for j in range(min(-k, nb - 1)):
                mass[s, j] = 0.0
            mass[s, nb - 1] = edge
    meta[M_LO] += k * meta[M_WIDTH]
    if meta[M_HI_LONG] >= 0.0:
        meta[M_HI_LONG] = min(max(meta[M_HI_LONG] - k, 0.0), nb - 1.0)
    if meta[M_LO_SHORT] < nb:
        meta[M_LO_SHORT] = min(max(meta[M_LO_SHORT] - k, 0.0), nb - 1.0)
    _resync(mass, meta)


@njit(cache=True)
def _consume(mass: np.ndarray, meta: np.ndarray, s: int, first: int, last: int) -> float:
    """Liquidate side s's levels in bins first..last; returns the true notional consumed."""
    got = 0.0
    for b in range(first, last + 1):
        got += mass[s, b]
        mass[s, b] = 0.0
    meta[M_STORED_LONG + s] = max(meta[M_STORED_LONG + s] - got, 0.0)
    return got * meta[M_SCALE_LONG + s]


@njit(cache=True, inline="always")   # numba inlines it into its callers: `stream.step`
def update(mass: np.ndarray, meta: np.ndarray, p: HeatmapParams, levs: np.ndarray,
           weights: np.ndarray, floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray,
           cum: np.ndarray, close: float, mark_high: float, mark_low: float, oi: float,
           taker_buy_volume: float, volume: float, quote_volume: float, ls_ratio: float,
           funding: float, realized_long: float, realized_short: float) -> tuple[float, float]:
    """Step the heatmap by one bar (see module docstring). Units: prices quote/base, `oi`
    base (NaN when unknown), volumes base except `quote_volume`, realised liquidation
    notional quote, `funding` the latest settled rate per interval (NaN when unknown).
    Returns the (long, short) notional consumed in this bar."""
    nb = mass.shape[1]
    _recenter(mass, meta, close, p.recenter_margin)
    if int(meta[M_BARS]) % RESYNC_BARS == 0:      # (a whole count: no float modulo)
        _resync(mass, meta)
    # 1. consumption by the bar's mark extremes, only over bins that can hold mass:
    #    long levels from the first bin centred at/above the mark low up to the highest
    #    occupied one; short levels from the lowest occupied one up to the mark high
    #    (when the outermost occupied level's centre is already beyond the mark extreme
    #    no level can be consumed: the range is set empty without the bin search, which
    #    saves a log per side and bar; a NaN mark, or a +inf low, takes the search as before)
    hi = int(meta[M_HI_LONG])
    if hi < 0 or (np.exp(meta[M_LO] + (hi + 0.5) * meta[M_WIDTH]) < mark_low < np.inf):
        start = hi + 1
    else:
        start = bin_of(mark_low, meta, nb)
        if np.exp(meta[M_LO] + (start + 0.5) * meta[M_WIDTH]) < mark_low:
            start += 1
    cons_l = _consume(mass, meta, LONG, start, hi)
    if start <= hi:
        meta[M_HI_LONG] = start - 1
    lo = int(meta[M_LO_SHORT])
    if lo >= nb or np.exp(meta[M_LO] + (lo + 0.5) * meta[M_WIDTH]) > mark_high:
        end = lo - 1
    else:
        end = bin_of(mark_high, meta, nb)
        if np.exp(meta[M_LO] + (end + 0.5) * meta[M_WIDTH]) > mark_high:
            end -= 1
    cons_s = _consume(mass, meta, SHORT, lo, end)
    if end >= lo:
        meta[M_LO_SHORT] = end + 1
    meta[M_CONSUMED_LONG] += cons_l
    meta[M_CONSUMED_SHORT] += cons_s
    if np.isfinite(realized_long):
        meta[M_REALIZED_LONG] += realized_long
    if np.isfinite(realized_short):
        meta[M_REALIZED_SHORT] += realized_short
    # 2. decay: on the scales only
    keep = np.exp(-np.log(2.0) / p.half_life_bars)
    meta[M_DECAYED] += (side_total(meta, LONG) + side_total(meta, SHORT)) * (1.0 - keep)
    meta[M_SCALE_LONG] *= keep
    meta[M_SCALE_SHORT] *= keep
    # 3. open interest (or the volume proxy)
    raw_buy = taker_buy_volume / volume if volume > 0.0 else 0.5
    buy_share = 0.5 + p.flow_weight * (raw_buy - 0.5)
    long_share = buy_share
    if np.isfinite(ls_ratio) and ls_ratio > 0.0:
        long_share = (1.0 - p.ls_weight) * buy_share + p.ls_weight * ls_ratio / (1.0 + ls_ratio)
    layer_share = long_share
    new_notional = 0.0
    if np.isfinite(oi):
        meta[M_CONFIDENCE] = 1.0
        prev = meta[M_PREV_OI]
        meta[M_PREV_OI] = oi
        if np.isfinite(prev):
            d = (oi - prev) * close
            if d > 0.0:
                new_notional = d
            elif d < 0.0:
                _remove(mass, meta, -d, 1.0 - buy_share)
    else:
        meta[M_CONFIDENCE] = 0.5
        imb = 2.0 * raw_buy - 1.0
        new_notional = p.proxy_frac * quote_volume * abs(imb)
        long_share = 1.0 if imb > 0.0 else 0.0
    if new_notional > 0.0:
        _add(mass, meta, p, levs, weights, floor, cap, mmr, cum, close, mark_high, mark_low,
             new_notional, long_share, funding)
    # 3b. churn: positions opened and closed at constant open interest (turnover), a share
    #     of the bar's quote volume moved from old levels to levels of the current prices
    #     (relative to its decayed average, so the book's unit does not matter)
    if p.churn_frac > 0.0 and np.isfinite(oi) and quote_volume > 0.0:
        ref = meta[M_VOL_REF]
        meta[M_VOL_REF] = quote_volume if ref <= 0.0 else keep * ref + (1.0 - keep) * quote_volume
        rel = min(quote_volume / meta[M_VOL_REF], 5.0)
        churn = min(p.churn_frac * rel, 1.0) * (side_total(meta, LONG) + side_total(meta, SHORT))
        if churn > 0.0:
            _remove(mass, meta, churn, long_share)
            _add(mass, meta, p, levs, weights, floor, cap, mmr, cum, close, mark_high,
                 mark_low, churn, long_share, funding)
    # 4. near-price layer (an overlay, outside the stored bins and their bookkeeping)
    if p.near_frac > 0.0 and np.isfinite(meta[M_PREV_OI]):
        layer = p.near_frac * meta[M_PREV_OI] * close
        meta[M_NEAR_LONG] = layer * layer_share
        meta[M_NEAR_SHORT] = layer * (1.0 - layer_share)
        meta[M_NEAR_REF] = np.log(close)
    meta[M_BARS] += 1.0
    return cons_l, cons_s


@njit(cache=True)
def _tilted_weight(p: HeatmapParams, levs: np.ndarray, weights: np.ndarray, stretch: float,
                   k: int) -> float:
    """Tier k's weight tilted toward high leverage by `stretch` (how stretched funding is,
    in [0, 2]; negative: no tilt), not normalised (`_add` divides by the sum over the
    tiers). Scalar, so a bar allocates nothing."""
    if stretch >= 0.0:
        return weights[k] * (1.0 + p.tilt_k * stretch * np.log(levs[k]) / np.log(100.0))
    return weights[k]


@njit(cache=True)
def _add(mass: np.ndarray, meta: np.ndarray, p: HeatmapParams, levs: np.ndarray,
         weights: np.ndarray, floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray,
         cum: np.ndarray, close: float, mark_high: float, mark_low: float, notional: float,
         long_share: float, funding: float) -> None:
    """Add `notional` of new positions over the leverage mix. With `entry_points` > 1 the
    entries are spread evenly over the bar's mark range (a long bar is not one price), and
    a level the bar's own range already crossed (long at/above the low, short at/below the
    high) is counted as added and consumed at once, never stored."""
    nb = mass.shape[1]
    # the funding stretch of the tilt, once per call (-1: funding unknown or tilt off)
    stretch = min(abs(funding) / 0.0005, 2.0) if np.isfinite(funding) and p.tilt_k > 0.0 \
        else -1.0
    w_total = 0.0
    for k in range(len(levs)):
        w_total += _tilted_weight(p, levs, weights, stretch, k)
    n_e = max(int(p.entry_points), 1)
    spread = n_e > 1 and np.isfinite(mark_high) and np.isfinite(mark_low) and \
        mark_high > mark_low
    for e in range(n_e):
        entry = close
        if spread:
            entry = mark_low + (e + 0.5) / n_e * (mark_high - mark_low)
        qty = p.typical_notional / entry
        for k in range(len(levs)):
            wk = _tilted_weight(p, levs, weights, stretch, k) / w_total
            wallet = p.typical_notional / levs[k]
            for s in range(2):
                side = 1.0 if s == LONG else -1.0
                share = long_share if s == LONG else 1.0 - long_share
                amount = notional * share * wk
                if spread:                   # (x / 1 is x: no division for one entry)
                    amount /= n_e
                if amount <= 0.0:
                    continue
                # the optional arguments given as the account code gives them: one
                # compiled variant for both callers
                liq = binance_liquidation_price_bracketed(side, qty, entry, wallet, floor, cap,
                                                          mmr, cum, 0.0, 0.0)[0]
                if liq <= 0.0:
                    continue
                meta[M_ADDED] += amount
                if spread and ((s == LONG and liq >= mark_low) or
                               (s == SHORT and liq <= mark_high)):
                    meta[M_CONSUMED_LONG + s] += amount
                    continue
                b = bin_of(liq, meta, nb)
                stored = amount / meta[M_SCALE_LONG + s]
                mass[s, b] += stored
                meta[M_STORED_LONG + s] += stored
                if s == LONG and b > meta[M_HI_LONG]:
                    meta[M_HI_LONG] = b
                elif s == SHORT and b < meta[M_LO_SHORT]:
                    meta[M_LO_SHORT] = b


@njit(cache=True)
def _remove(mass: np.ndarray, meta: np.ndarray, notional: float, long_share: float) -> None:
    """Remove `notional`, `long_share` of it from longs, proportionally across levels (a
    scale change); what one side cannot cover is taken from the other."""
    want_l = notional * long_share                 # scalars: a bar allocates nothing
    want_s = notional * (1.0 - long_share)
    have_l = side_total(meta, LONG)
    have_s = side_total(meta, SHORT)
    spill = want_l - have_l
    if spill > 0.0:
        want_l = have_l
        want_s += spill
    spill = want_s - have_s
    if spill > 0.0:
        want_s = have_s
        want_l += spill
    for s in range(2):
        want = want_l if s == LONG else want_s
        have = have_l if s == LONG else have_s
        take = min(want, have)
        if take <= 0.0 or have <= 0.0:
            continue
        keep = 1.0 - take / have
        if keep < 1e-12:                     # the side is emptied: reset instead of scale 0
            mass[s, :] = 0.0
            meta[M_STORED_LONG + s] = 0.0
            meta[M_SCALE_LONG + s] = 1.0
            if s == LONG:
                meta[M_HI_LONG] = -1.0
            else:
                meta[M_LO_SHORT] = mass.shape[1]
        else:
            meta[M_SCALE_LONG + s] *= keep
        meta[M_REMOVED] += take


@njit(cache=True)
def near_layer_within(meta: np.ndarray, s: int, x: float) -> float:
    """Notional of side s's near-price layer within log distance `x` of its reference close
    (below for longs, above for shorts): layer x (x / near_max) ** near_pow, capped at the
    whole layer; 0 for x <= 0 or without a layer."""
    total = meta[M_NEAR_LONG + s]
    if total <= 0.0 or x <= 0.0:
        return 0.0
    return total * min(x / meta[M_NEAR_MAX], 1.0) ** meta[M_NEAR_POW]


@njit(cache=True)
def near_layer_between(meta: np.ndarray, s: int, lo_price: float, hi_price: float) -> float:
    """Notional of side s's near-price layer whose levels lie in [lo_price, hi_price]."""
    if meta[M_NEAR_LONG + s] <= 0.0 or not (lo_price > 0.0 and hi_price >= lo_price):
        return 0.0
    ref = meta[M_NEAR_REF]
    if s == LONG:                # levels below the reference: distance ref - ln(price)
        near, far = ref - np.log(hi_price), ref - np.log(lo_price)
    else:
        near, far = np.log(lo_price) - ref, np.log(hi_price) - ref
    return near_layer_within(meta, s, far) - near_layer_within(meta, s, max(near, 0.0))


@njit(cache=True)
def side_mass_near(mass: np.ndarray, meta: np.ndarray, mark: float, within: float) -> \
        tuple[float, float]:
    """(long notional within `within` below mark, short notional within `within` above),
    the near-price layer included when there is one."""
    nb = mass.shape[1]
    b_mark = bin_of(mark, meta, nb)
    b_dn = bin_of(mark * (1.0 - within), meta, nb)
    b_up = bin_of(mark * (1.0 + within), meta, nb)
    lo_sum = 0.0
    for b in range(b_dn, b_mark + 1):
        lo_sum += mass[LONG, b]
    up_sum = 0.0
    for b in range(b_mark, b_up + 1):
        up_sum += mass[SHORT, b]
    return (lo_sum * meta[M_SCALE_LONG] + near_layer_between(meta, LONG, mark * (1.0 - within),
                                                            mark),
            up_sum * meta[M_SCALE_SHORT] + near_layer_between(meta, SHORT, mark,
                                                             mark * (1.0 + within)))


@njit(cache=True)
def nearest_clusters(mass: np.ndarray, meta: np.ndarray, mark: float, p: HeatmapParams,
                     out: np.ndarray) -> None:
    """Nearest dense cluster on each side of the mark, written as
    out = [below price, below far edge, below share, above price, above far edge, above share]
    (NaN when none within `cluster_search` bins). A cluster is a `cluster_window`-bin run of
    long (below) or short (above) levels holding >= `cluster_share` of that side's mass;
    its price is the window's mass-weighted centre, its far edge the window's outer edge."""
    nb = mass.shape[1]
    out[:] = np.nan
    b0 = bin_of(mark, meta, nb)
    w = p.cluster_window
    for s in range(2):
        total = meta[M_STORED_LONG + s]      # stored units: shares do not depend on the scale
        if total <= 0.0:
            continue
        step = -1 if s == LONG else 1
        run = 0.0
        k = 0
        b = b0
        while 0 <= b < nb and k < p.cluster_search:
            run += mass[s, b]
            if k >= w:
                run -= mass[s, b - step * w]
            if k >= w - 1 and run >= p.cluster_share * total:
                num = 0.0
                for j in range(w):
                    bj = b - step * j
                    num += mass[s, bj] * (meta[M_LO] + (bj + 0.5) * meta[M_WIDTH])
                price = np.exp(num / run)
                edge = np.exp(meta[M_LO] + b * meta[M_WIDTH]) if s == LONG else \
                    np.exp(meta[M_LO] + (b + 1) * meta[M_WIDTH])
                out[3 * s] = price
                out[3 * s + 1] = edge
                out[3 * s + 2] = run / total
                break
            b += step
            k += 1


class HeatmapRun(NamedTuple):
    """Per-bar series of a batch run plus the final state and strided snapshots."""

    long_total: np.ndarray
    short_total: np.ndarray
    consumed_long: np.ndarray
    consumed_short: np.ndarray
    near_long: np.ndarray       # long mass within `near` below the close
    near_short: np.ndarray      # short mass within `near` above the close
    confidence: np.ndarray
    clusters: np.ndarray        # (n, 6): nearest dense cluster below (price, far edge, share)
    #                             and above (price, far edge, share), NaN when none
    mass: np.ndarray            # TRUE notional per bin (materialised) at the last bar
    meta: np.ndarray
    snapshots: np.ndarray       # (n_snap, 2, n_bins) true notional at every `stride`-th bar
    snapshot_lo: np.ndarray     # grid origin of each snapshot


@njit(cache=True)
def run_kernel(mass: np.ndarray, meta: np.ndarray, p: HeatmapParams, levs: np.ndarray,
               weights: np.ndarray, floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray,
               cum: np.ndarray, close: np.ndarray, mark_high: np.ndarray,
               mark_low: np.ndarray, oi: np.ndarray, taker_buy: np.ndarray, volume: np.ndarray,
               quote_volume: np.ndarray, ls_ratio: np.ndarray, funding: np.ndarray,
               liq_long: np.ndarray, liq_short: np.ndarray, near: float,
               stride: int) -> tuple[np.ndarray, ...]:
    """Step through every bar; `funding` is the rate the map reads at each bar
    (`map_funding`: already carried forward)."""
    n = len(close)
    out = np.empty((13, n))
    n_snap = (n + stride - 1) // stride if stride > 0 else 0
    snaps = np.zeros((n_snap, 2, mass.shape[1]))
    snap_lo = np.zeros(n_snap)
    k = 0
    for t in range(n):
        cl, cs = update(mass, meta, p, levs, weights, floor, cap, mmr, cum, close[t],
                        mark_high[t], mark_low[t], oi[t], taker_buy[t], volume[t],
                        quote_volume[t], ls_ratio[t], funding[t], liq_long[t], liq_short[t])
        nl, ns = side_mass_near(mass, meta, close[t], near)
        out[0, t] = side_total(meta, LONG)
        out[1, t] = side_total(meta, SHORT)
        out[2, t] = cl
        out[3, t] = cs
        out[4, t] = nl
        out[5, t] = ns
        out[6, t] = meta[M_CONFIDENCE]
        nearest_clusters(mass, meta, close[t], p, out[7:13, t])
        if stride > 0 and t % stride == 0 and k < n_snap:
            snaps[k, 0] = mass[LONG] * meta[M_SCALE_LONG]
            snaps[k, 1] = mass[SHORT] * meta[M_SCALE_SHORT]
            snap_lo[k] = meta[M_LO]
            k += 1
    return out, snaps, snap_lo


def map_funding(settled: np.ndarray, funding_avg: np.ndarray) -> np.ndarray:
    """The funding rate the map reads at each bar: the last settled rate (`settled`: the
    rate at its settlement bar, NaN elsewhere), and before the first settlement the
    vendor's OI-weighted average of the bar itself (a 4h state column; NaN when absent).
    The signal stream's `step` reads the same, bar by bar."""
    n = len(settled)
    seen = np.isfinite(settled)
    idx = np.where(seen, np.arange(n), 0)
    np.maximum.accumulate(idx, out=idx)
    last = np.where(seen[idx], settled[idx], np.nan)
    return np.where(np.isfinite(last), last, funding_avg)


def bar_inputs(bars: object) -> dict[str, np.ndarray]:
    """The heatmap's per-bar inputs from a Bars container, with the signal stream's one set
    of fallbacks (`stream.bar_column`: marks to last-trade prices, taker buy to the
    aggregated taker notionals' share or 50/50, open interest to the stablecoin-margined OI
    of vendor data, missing ratios / funding / realised liquidations to NaN). `funding` is
    the settled rate (NaN between settlements); `map_funding` what the map reads."""
    from bot.signals import stream as sm  # stream imports this module: resolved at call

    def col(j: int) -> np.ndarray:
        return np.ascontiguousarray(sm.bar_column(bars, j), dtype=np.float64)  # type: ignore[arg-type]

    funding = col(sm.X_FUNDING)
    return {
        "close": col(sm.X_CLOSE),
        "mark_open": col(sm.X_MARK_OPEN),
        "mark_high": col(sm.X_MARK_HIGH),
        "mark_low": col(sm.X_MARK_LOW),
        "oi": col(sm.X_OI),
        "taker_buy": col(sm.X_TAKER_BUY),
        "volume": col(sm.X_VOLUME),
        "quote_volume": col(sm.X_QUOTE_VOLUME),
        "ls_ratio": col(sm.X_LS_RATIO),
        "funding": funding,
        "map_funding": map_funding(funding, col(sm.X_FUNDING_AVG)),
        "liq_long": col(sm.X_LIQ_LONG),
        "liq_short": col(sm.X_LIQ_SHORT),
    }


def run(bars: object, brackets: object, p: HeatmapParams = HeatmapParams(),
        levs: np.ndarray = DEFAULT_LEVERAGES, weights: np.ndarray = DEFAULT_WEIGHTS,
        near: float = 0.03, stride: int = 0) -> HeatmapRun:
    """Run the estimator over every bar of `bars` (bot.data.bars.Bars) with `brackets`
    (bot.mechanics.brackets.Brackets); snapshots every `stride` bars when stride > 0."""
    x = bar_inputs(bars)
    mass, meta = new_state(float(x["close"][0]), p)
    br = brackets
    out, snaps, snap_lo = run_kernel(
        mass, meta, p, np.asarray(levs, float), np.asarray(weights, float),
        br.floor, br.cap, br.mmr, br.cum,  # type: ignore[attr-defined]
        x["close"], x["mark_high"], x["mark_low"], x["oi"], x["taker_buy"], x["volume"],
        x["quote_volume"], x["ls_ratio"], x["map_funding"], x["liq_long"], x["liq_short"],
        near, stride)
    materialize(mass, meta)
    return HeatmapRun(out[0], out[1], out[2], out[3], out[4], out[5], out[6],
                      np.ascontiguousarray(out[7:13].T), mass, meta, snaps, snap_lo)


@njit(cache=True)
def _norm_sf(x: float) -> float:
    """1 - Phi(x), the standard normal survival function."""
    return 0.5 * math.erfc(x / np.sqrt(2.0))


@njit(cache=True)
def expected_liquidations(mass: np.ndarray, meta: np.ndarray, close: float,
                          sigma_horizon: float) -> np.ndarray:
    """Predicted liquidation notional per bin over a horizon: mass x P(price reaches it).

    P(reach) = 2 (1 - Phi(|ln(level / close)| / sigma_horizon)), the reflection-principle
    probability that a driftless log price touches the level within the horizon, with
    `sigma_horizon` the log-return volatility over the horizon (e.g. 1m sigma x sqrt(1440)).
    The raw `mass` says where positions would be liquidated; this says how much of it the
    next horizon is likely to liquidate, which is what the validation scores.
    """
    nb = mass.shape[1]
    out = np.empty(nb)
    lc = np.log(close)
    s = max(sigma_horizon, 1e-9)
    for b in range(nb):
        d = abs(meta[M_LO] + (b + 0.5) * meta[M_WIDTH] - lc)
        out[b] = (mass[LONG, b] + mass[SHORT, b]) * 2.0 * _norm_sf(d / s)
    return out


def trailing_sigma(close: np.ndarray, bars: int) -> float:
    """Std of 1-bar log returns over the last `bars` bars (causal: uses close[:t+1])."""
    r = np.diff(np.log(close[-(bars + 1):]))
    return float(r.std()) if len(r) > 1 else 0.0


@njit(cache=True)
def side_mass_between(mass: np.ndarray, meta: np.ndarray, s: int, lo_price: float,
                      hi_price: float) -> float:
    """True notional of side `s` in the bins whose centre lies in [lo_price, hi_price] (the
    same centre rule `update` uses to consume a level); 0 for an empty or invalid range."""
    if not (lo_price > 0.0 and hi_price >= lo_price):
        return 0.0
    nb = mass.shape[1]
    b0 = bin_of(lo_price, meta, nb)
    if np.exp(meta[M_LO] + (b0 + 0.5) * meta[M_WIDTH]) < lo_price:
        b0 += 1
    b1 = bin_of(hi_price, meta, nb)
    if np.exp(meta[M_LO] + (b1 + 0.5) * meta[M_WIDTH]) > hi_price:
        b1 -= 1
    got = 0.0
    for b in range(b0, b1 + 1):
        got += mass[s, b]
    return got * meta[M_SCALE_LONG + s] + near_layer_between(meta, s, lo_price, hi_price)


#: columns of `timeline_kernel`'s output before the near-mass pairs
TL_EST_LONG, TL_EST_SHORT, TL_CONFIDENCE = range(3)


@njit(cache=True)
def timeline_kernel(mass: np.ndarray, meta: np.ndarray, p: HeatmapParams, levs: np.ndarray,
                    weights: np.ndarray, floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray,
                    cum: np.ndarray, open_: np.ndarray, close: np.ndarray,
                    mark_high: np.ndarray, mark_low: np.ndarray, oi: np.ndarray,
                    taker_buy: np.ndarray, volume: np.ndarray, quote_volume: np.ndarray,
                    ls_ratio: np.ndarray, funding: np.ndarray, liq_long: np.ndarray,
                    liq_short: np.ndarray, nears: np.ndarray) -> np.ndarray:
    """Per bar t, one row: [est_long, est_short, confidence, near_long(nears[0]),
    near_short(nears[0]), near_long(nears[1]), ...].

    est_long / est_short are read from the map FROZEN AT THE BAR'S OPEN (it has seen bars < t
    only): long notional between the bar's mark low and its open, short notional between its
    open and its mark high, i.e. what the bar's range liquidates according to the map before
    the bar is stepped. With `intra_weight` > 0 they add that share of the near-price layer
    (as at the open) within the bar's range, ln(high / low): positions the bar re-opens at
    its extremes and its own range liquidates (the range is the only in-bar input). The
    near masses and confidence are read after stepping bar t (known at its close)."""
    n = len(close)
    k = len(nears)
    out = np.empty((n, 3 + 2 * k))
    for t in range(n):
        if meta[M_BARS] > 0.0:
            out[t, TL_EST_LONG] = side_mass_between(mass, meta, LONG, mark_low[t], open_[t])
            out[t, TL_EST_SHORT] = side_mass_between(mass, meta, SHORT, open_[t], mark_high[t])
            if p.intra_weight > 0.0 and mark_high[t] > mark_low[t] > 0.0:
                span = np.log(mark_high[t] / mark_low[t])
                out[t, TL_EST_LONG] += p.intra_weight * near_layer_within(meta, LONG, span)
                out[t, TL_EST_SHORT] += p.intra_weight * near_layer_within(meta, SHORT, span)
        else:
            out[t, TL_EST_LONG] = np.nan         # no map before the first bar
            out[t, TL_EST_SHORT] = np.nan
        update(mass, meta, p, levs, weights, floor, cap, mmr, cum, close[t], mark_high[t],
               mark_low[t], oi[t], taker_buy[t], volume[t], quote_volume[t], ls_ratio[t],
               funding[t], liq_long[t], liq_short[t])
        out[t, TL_CONFIDENCE] = meta[M_CONFIDENCE]
        for j in range(k):
            nl, ns = side_mass_near(mass, meta, close[t], nears[j])
            out[t, 3 + 2 * j] = nl
            out[t, 4 + 2 * j] = ns
    return out


def timeline(bars: object, brackets: object, p: HeatmapParams = HeatmapParams(),
             levs: np.ndarray = DEFAULT_LEVERAGES, weights: np.ndarray = DEFAULT_WEIGHTS,
             nears: tuple[float, ...] = (0.01, 0.03, 0.05), chunk: int = 0,
             progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Per-bar frozen-map estimates and near-price masses (quote notional) of `bars`:
    `est_long`, `est_short` (see `timeline_kernel`), `confidence`, and
    `long_mass_{x}pct` / `short_mass_{x}pct` for every x in `nears` (as fractions).
    With `chunk` > 0 the kernel runs `chunk` bars at a time on the same state (identical
    result) and `progress(bars_done)` is called after each chunk."""
    x = bar_inputs(bars)
    opens = x["mark_open"]
    n = len(opens)
    fund = x["map_funding"]          # carried forward here: chunk boundaries change nothing
    mass, meta = new_state(float(x["close"][0]), p)
    br = brackets
    lv, wt, nr = np.asarray(levs, float), np.asarray(weights, float), np.asarray(nears, float)
    step = chunk if chunk > 0 else max(n, 1)
    parts = []
    for a in range(0, n, step):
        s = slice(a, min(a + step, n))
        parts.append(timeline_kernel(
            mass, meta, p, lv, wt, br.floor, br.cap, br.mmr, br.cum,  # type: ignore[attr-defined]
            opens[s], x["close"][s], x["mark_high"][s], x["mark_low"][s], x["oi"][s],
            x["taker_buy"][s], x["volume"][s], x["quote_volume"][s], x["ls_ratio"][s], fund[s],
            x["liq_long"][s], x["liq_short"][s], nr))
        if progress is not None:
            progress(s.stop)
    out = np.concatenate(parts) if parts else np.zeros((0, 3 + 2 * len(nears)))
    res = {"est_long": out[:, TL_EST_LONG], "est_short": out[:, TL_EST_SHORT],
           "confidence": out[:, TL_CONFIDENCE]}
    for j, w in enumerate(nears):
        tag = f"{w * 100:g}pct"
        res[f"long_mass_{tag}"] = out[:, 3 + 2 * j]
        res[f"short_mass_{tag}"] = out[:, 4 + 2 * j]
    return res


def params_for_interval(interval_ms: int, p: HeatmapParams = HeatmapParams(),
                        half_life_hours: float | None = None) -> HeatmapParams:
    """`p` with the decay half-life expressed in bars of `interval_ms` (the defaults are
    for 1m bars: `half_life_bars` minutes). `half_life_hours` overrides the half-life."""
    hours = p.half_life_bars / 60.0 if half_life_hours is None else half_life_hours
    return p._replace(half_life_bars=max(hours * 3_600_000.0 / interval_ms, 1e-6))


#: Calibrated on REAL 4h BTC liquidations 2024-11-13 .. 2025-03-13 (grid search of 16,512
#: sets, held out 2025-03-13 .. 2025-05-12; `benchmarks/heatmap_skill.py`, docs/heatmap.md):
#: half-life 90 days (540 4h bars), churn 0.2 of the book per average-volume bar, OI changes
#: split 50/50 (flow_weight 0) blended 30% with the account ratio, 16 tiers 2x..75x weighted
#: lev**-2, and a near-price layer of 0.03% of the OI notional within 5% of the close
#: (profile x ** 1.5), 30% of it re-opened at the bar's extremes and crossed by its range.
CALIBRATED_4H = HeatmapParams(half_life_bars=540.0, churn_frac=0.2, flow_weight=0.0,
                              ls_weight=0.3, tilt_k=1.0, near_frac=3e-4, near_pow=1.5,
                              near_max=0.05, intra_weight=0.3)
CALIBRATED_4H_LEVERAGES = np.geomspace(2.0, 75.0, 16)
CALIBRATED_4H_WEIGHTS = CALIBRATED_4H_LEVERAGES ** -2.0 / np.sum(CALIBRATED_4H_LEVERAGES ** -2.0)
