"""Tick mode of the synthetic generator: the trades inside each generated minute, and every
forced liquidation of the ground truth as a liquidation tick at its moment in the minute.

Construction (one seeded numba kernel over the bars of `synthetic.generate`; the bar run is
untouched, so a seed gives the same bars with or without ticks, bit for bit, except the
volume columns named below):
- each minute holds exactly the bar's `trades` count of ticks, spread evenly over the
  minute (ts = minute open + j x 60000 // n ms);
- prices follow the path open -> first extreme -> second extreme -> close (low first in an
  up minute, high first in a down minute; the extremes at seeded positions), jittered by a
  tenth of the range and clipped into [low, high]; the open, both extremes (twice each:
  one buy and one sell) and the close sit exactly on the bar's prices, so the ticks'
  open, high, low, close and count ARE the bar's;
- sides: taker buy with probability taker_buy_volume / volume; sizes lognormal, scaled so
  each side's base volume equals the bar's taker buy volume and the rest;
- the bar's quote columns (`quote_volume`, `taker_buy_quote_volume`) and the base volumes
  are then re-aggregated from the ticks (`bot.data.trades.aggregate`), so the dataset's
  bars are exactly the ticks' 1m bars. The model priced every minute's volume at its close;
  the ticks price it along the path, so quote volumes move by about the minute's range;
- every row of `truth_liquidations` (minute, side, liquidation price, qty) becomes a
  liquidation tick at the time of the first trade of its minute at or beyond its price
  (at or below for a long, at or above for a short): the moment the market reached it.
  Their per-minute notional sums are the bars' `liq_long_notional` / `liq_short_notional`.
Tables added: `trades` (ts, price, qty, side) and `liquidations` (ts, side, price, qty,
notional); units in `bot.data.trades`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numba import njit

from bot.data.bars import Trades
from bot.data.dataset import Dataset
from bot.data.rng import make_state, normal, uniform
from bot.data.synthetic import SpecError, SynthSpec, generate
from bot.data.trades import LIQ_TABLE, TRADES_TABLE, bars_of

TICKS_MODEL = "liqbot.synthetic_ticks/1"
#: Mixed into the seed so the tick stream is independent of the bar model's stream.
_SALT = 0x71C4_5EED_0B5E_7A11
#: A minute needs the open, close and two ticks at each extreme.
MIN_TRADES = 6
SIZE_SIGMA = 0.8          # lognormal sigma of tick sizes
JITTER = 0.1              # price jitter, fraction of the minute's range


@njit(cache=True)
def _path(j: int, a: int, b: int, n: int, o: float, e1: float, e2: float, c: float) -> float:
    if j <= a:
        return o + (e1 - o) * j / a
    if j <= b:
        return e1 + (e2 - e1) * (j - a - 1) / (b - a - 1) if b - a - 1 > 0 else e1
    return e2 + (c - e2) * (j - b - 1) / (n - b - 2)


@njit(cache=True)
def _ticks(bar_ts: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
           vol: np.ndarray, tbv: np.ndarray, n_tr: np.ndarray, interval_ms: int,
           liq_bar: np.ndarray, liq_side: np.ndarray, liq_price: np.ndarray,
           state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                       np.ndarray]:
    total = 0
    for m in range(len(n_tr)):
        total += n_tr[m]
    ts = np.empty(total, np.int64)
    px = np.empty(total)
    qty = np.empty(total)
    side = np.empty(total, np.int8)
    liq_ts = np.empty(len(liq_bar), np.int64)
    off = 0
    e = 0
    for m in range(len(n_tr)):
        n = n_tr[m]
        a = 1 + int(uniform(state) * ((n - 4) // 2))     # first extreme at a and a + 1
        b = a + 2 + int(uniform(state) * (n - 4 - a))    # second at b and b + 1 <= n - 2
        up = c[m] >= o[m]
        e1 = lo[m] if up else h[m]
        e2 = h[m] if up else lo[m]
        rng = h[m] - lo[m]
        p_buy = tbv[m] / vol[m]
        w_buy = 0.0
        w_sell = 0.0
        for j in range(n):
            i = off + j
            ts[i] = bar_ts[m] + (j * interval_ms) // n
            if j == 0:
                p = o[m]
            elif j == n - 1:
                p = c[m]
            elif j in (a, a + 1):
                p = e1
            elif j in (b, b + 1):
                p = e2
            else:
                p = _path(j, a, b, n, o[m], e1, e2, c[m]) + JITTER * rng * normal(state)
                p = min(max(p, lo[m]), h[m])
            px[i] = p
            if j in (a, b):
                s = 1
            elif j in (a + 1, b + 1):
                s = -1
            else:
                s = 1 if uniform(state) < p_buy else -1
            side[i] = s
            w = np.exp(SIZE_SIGMA * normal(state))
            qty[i] = w
            if s > 0:
                w_buy += w
            else:
                w_sell += w
        k_buy = tbv[m] / w_buy
        k_sell = (vol[m] - tbv[m]) / w_sell
        for j in range(n):
            i = off + j
            qty[i] *= k_buy if side[i] > 0 else k_sell
        while e < len(liq_bar) and liq_bar[e] == m:
            lp = liq_price[e]
            hit = -1
            for j in range(n):
                p = px[off + j]
                if (liq_side[e] > 0 and p <= lp) or (liq_side[e] < 0 and p >= lp):
                    hit = j
                    break
            if hit < 0:        # numerically outside the range: the extreme on its side
                hit = a if (e1 == lo[m]) == (liq_side[e] > 0) else b
            liq_ts[e] = ts[off + hit]
            e += 1
        off += n
    return ts, px, qty, side, liq_ts


def add_ticks(ds: Dataset) -> Dataset:
    """The synthetic dataset `ds` (from `synthetic.generate`) with its ticks: tables
    `trades` and `liquidations`, and bars re-aggregated from the ticks (module docstring)."""
    gen = ds.meta.get("generator")
    if not isinstance(gen, dict) or "seed" not in gen:
        raise SpecError("tick mode needs a synthetic dataset (its manifest names the generator "
                        "and seed)")
    b = ds.bars
    n_tr = np.asarray(b["trades"], np.int64)
    vol, tbv = b["volume"], b["taker_buy_volume"]
    if (n_tr < MIN_TRADES).any():
        i = int(np.flatnonzero(n_tr < MIN_TRADES)[0])
        raise SpecError(f"tick mode needs at least {MIN_TRADES} trades a minute; minute {i} has "
                        f"{int(n_tr[i])} (raise the base_trades parameter)")
    if not ((tbv > 0.0) & (vol - tbv > 0.0)).all():
        raise SpecError("tick mode needs taker buys and sells in every minute")
    liq = ds.tables["truth_liquidations"]
    liq_bar = ((liq["ts"] - b.ts[0]) // b.interval_ms).astype(np.int64)
    ts, px, qty, side, liq_ts = _ticks(
        b.ts, b["open"], b["high"], b["low"], b.close, vol, tbv, n_tr, int(b.interval_ms),
        liq_bar, liq["side"].astype(np.int8), liq["price"], make_state(int(gen["seed"]) ^ _SALT))
    trades = Trades(b.symbol, ts, px, qty, side)
    agg, starts = bars_of(trades, b.interval_ms)
    if len(agg) != len(b) or not all(np.array_equal(agg[k], b[k]) for k in
                                     ("ts", "open", "high", "low", "close", "trades")):
        raise AssertionError("synthetic ticks do not reproduce the bars' OHLC and counts")
    bars = b.with_columns(**{k: agg[k] for k in ("volume", "quote_volume", "taker_buy_volume",
                                                 "taker_buy_quote_volume")})
    order = np.argsort(liq_ts, kind="stable")
    liq_tab = {"ts": liq_ts[order], "side": liq["side"][order].astype(np.int8),
               "price": liq["price"][order], "qty": liq["qty"][order],
               "notional": liq["notional"][order]}
    tables = {**ds.tables, TRADES_TABLE: {"ts": ts, "price": px, "qty": qty, "side": side},
              LIQ_TABLE: liq_tab}
    meta = {**ds.meta, "ticks": {"model": TICKS_MODEL, "trades": int(len(ts)),
                                 "liquidations": int(len(liq_ts))}}
    return replace(ds, bars=bars, tables=tables, meta=meta)


def generate_ticks(spec: SynthSpec) -> Dataset:
    """`synthetic.generate(spec)` in tick mode (`add_ticks`)."""
    return add_ticks(generate(spec))

