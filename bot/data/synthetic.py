"""Synthetic cascade days: a seeded agent-based model with a known position book.

Model (one numba kernel, `_simulate`, stepping `substeps` times per minute):
- Leveraged traders arrive as a Poisson stream. Each opens a position of lognormal quote
  size, long with probability 0.5 + bias (the bias ramps up over the days for
  `crowding="long"`, down for "short", stays 0 for "none"), at a leverage drawn from a mix
  (5x..100x). Its isolated liquidation price comes from `bot.mechanics` (the same formula
  the account uses), and its base qty is added to a log-spaced bin of liquidation prices
  (0.1% wide). Opening is a taker order in the position's direction.
- Positions also close voluntarily at a constant hazard (mean holding time), as taker
  orders in the opposite direction. Bins are scaled lazily, so a close is O(1).
- Price: log price moves by a Gaussian shock, plus impact = net taker quote flow / depth,
  where depth thins as recent liquidation flow grows (books empty in a cascade), plus a
  pull back toward a slow anchor (dip buyers) once the deviation is large.
- When the price crosses a bin, its positions are force-closed: a market order executed in
  the NEXT sub-step, whose impact can cross the next bin: the cascade.
- On the last day a news shock pushes price against the crowded side for a few minutes
  (a random direction for "none"), which is what lights the fuse.
- Funding settles every 8h from the average premium (Binance clamp formula), and the
  premium follows the long/short imbalance of the crowd.

Outputs a normal dataset (1m bars with mark OHLC, premium, funding, open interest,
taker volumes, realised liquidation notional per side) plus the ground truth: every
forced close (`truth_liquidations`) and hourly snapshots of the book (`truth_book`).
Same seed, same bytes: the RNG is integer-only splitmix64 (`bot.data.rng`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from numba import njit

from bot.config import SYNTHETIC_MAX_DAYS
from bot.data.bars import MINUTE_MS, Bars
from bot.data.dataset import Dataset, iso
from bot.data.grid import log_bin
from bot.data.rng import make_state, normal, poisson, uniform
from bot.errors import LiqbotError
from bot.mechanics.funding import funding_rate_from_premium
from bot.mechanics.liquidation import binance_liquidation_price

#: 2026-01-01T00:00:00Z; synthetic days start here so they never collide with real dates.
SYNTH_START_MS = 1767225600000
MODEL_VERSION = "liqbot.synthetic/1"
CROWDING_BIAS = {"long": 1.0, "short": -1.0, "none": 0.0}
#: Seeds are splitmix64 states: a non-negative int64.
MAX_SEED = 2**63 - 1
#: Longest synthetic run (one bound for the CLI and the config's `data.synthetic.days`)
MAX_DAYS = SYNTHETIC_MAX_DAYS


class SynthParams(NamedTuple):
    """Model parameters (floats for numba). Units: quote = USDT, rates per minute."""

    start_price: float = 100_000.0
    sigma_1m: float = 0.00045          # std of 1m log return from the Gaussian shock
    arrivals_per_min: float = 40.0     # leveraged positions opened per minute
    size_median: float = 40_000.0      # median position notional (quote)
    size_sigma: float = 1.0            # lognormal sigma of position notional
    crowd_bias: float = 0.25           # max extra long probability (sign from crowding)
    bias_ramp_days: float = 2.0        # bias reaches its max after this many days
    hold_minutes: float = 1_440.0      # mean holding time of a voluntary position
    mmr: float = 0.004                 # maintenance margin rate used for the crowd
    depth_per_pct: float = 200e6       # quote notional that moves price 1% in calm books
    thin_k: float = 0.5                # depth divisor grows by thin_k per depth of liq flow
    liq_ewma_min: float = 5.0          # memory (minutes) of liquidation flow for thinning
    anchor_half_life_min: float = 360.0
    revert_per_min: float = 0.05       # pull toward the anchor beyond the dead band
    revert_band: float = 0.015         # dead band (log distance) before dip buyers act
    base_quote_volume: float = 7e6     # median background quote volume per minute
    volume_sigma: float = 0.45
    activity_k: float = 2.0            # background volume multiplier per sqrt(|ret|/sigma)
    base_trades: float = 2_000.0       # trades per minute at base volume
    trades_exp: float = 0.8            # trades ~ volume^exp
    premium_k: float = 0.004           # premium per unit of crowd imbalance
    premium_noise: float = 0.00005
    passive_oi_quote: float = 4e9      # open interest not held by the leveraged crowd
    shock_pct: float = 0.015           # news shock size (fraction of price)
    shock_minutes: float = 2.0
    wick_k: float = 0.35               # last-trade wick beyond the mark, per unit impact
    warmup_minutes: float = 1_440.0    # simulated before the first bar so the book is full
    post_shock_bias_half_life: float = 120.0  # minutes: the crowd's bias fades after the shock
    delever_mult: float = 4.0          # voluntary closing hazard multiplier after the shock
    delever_minutes: float = 480.0     # how long the deleveraging lasts


@dataclass(frozen=True)
class SynthSpec:
    """What to generate: seed, days, crowding, substeps, and the model parameters."""

    seed: int = 7
    days: int = 3
    crowding: str = "long"
    symbol: str = "BTCUSDT"
    substeps: int = 4
    snapshot_minutes: int = 60
    params: SynthParams = SynthParams()


LEVERAGES = np.array([5.0, 10.0, 20.0, 25.0, 50.0, 100.0])
LEVERAGE_WEIGHTS = np.array([0.18, 0.27, 0.2, 0.15, 0.12, 0.08])
GRID_HALF_WIDTH = 1.2   # log-price half range of the bin grid around the start price
BIN_WIDTH = 0.001       # 0.1% bins


@njit(cache=True)
def _simulate(n_min: int, substeps: int, snap_every: int, p: SynthParams, crowd_sign: float,
              shock_min: int, shock_dir: float, levs: np.ndarray, lev_cdf: np.ndarray,
              state: np.ndarray) -> tuple[np.ndarray, ...]:
    nb = int(2 * GRID_HALF_WIDTH / BIN_WIDTH)
    lo = np.log(p.start_price) - GRID_HALF_WIDTH
    warmup = int(p.warmup_minutes)
    n_bars = n_min
    n_min = n_bars + warmup
    long_q = np.zeros(nb)   # stored qty; true qty = stored * scale (lazy decay)
    short_q = np.zeros(nb)
    scale = 1.0
    out = np.empty((n_bars, 19))
    max_ev = n_min * 8 + 1024
    ev_ts = np.empty(max_ev, np.int64)
    ev_side = np.empty(max_ev, np.int8)
    ev_price = np.empty(max_ev)
    ev_qty = np.empty(max_ev)
    n_ev = 0
    n_snap_max = n_bars // snap_every + 1
    snap = np.zeros((n_snap_max, 2, nb))
    n_snap = 0
    logp = np.log(p.start_price)
    anchor = logp
    sub_sigma = p.sigma_1m / np.sqrt(substeps)
    hazard = 1.0 - np.exp(-1.0 / (p.hold_minutes * substeps))
    a_anchor = 1.0 - np.exp(np.log(0.5) / p.anchor_half_life_min)
    a_liq = 1.0 - np.exp(-1.0 / p.liq_ewma_min)
    depth0 = p.depth_per_pct * 100.0      # quote per unit of log return
    liq_ewma = 0.0
    pending_flow = 0.0                    # forced-close quote flow to execute next sub-step
    premium = 0.0
    prem_sum = 0.0
    prem_n = 0
    long_tot = 0.0
    short_tot = 0.0
    for m in range(n_min):
        day = (m - warmup) / 1440.0
        ramp = max(day, 0.0) / p.bias_ramp_days
        if ramp > 1.0:
            ramp = 1.0
        since_shock = m - (shock_min + warmup)
        if since_shock >= 0:
            ramp *= np.exp(-np.log(2.0) * since_shock / p.post_shock_bias_half_life)
        p_long = 0.5 + crowd_sign * p.crowd_bias * ramp
        hz = hazard
        if 0 <= since_shock < p.delever_minutes:
            hz = 1.0 - (1.0 - hazard) ** p.delever_mult
        o_mark = np.exp(logp)
        h_mark = o_mark
        l_mark = o_mark
        h_last = o_mark
        l_last = o_mark
        logp_open = logp
        buy_n = 0.0
        sell_n = 0.0
        liq_long = 0.0
        liq_short = 0.0
        for _s in range(substeps):
            price = np.exp(logp)
            # -- voluntary flow: new positions and closes
            flow = 0.0   # quote notional, + = taker buy
            n_new = poisson(state, p.arrivals_per_min / substeps)
            for _ in range(n_new):
                notional = p.size_median * np.exp(p.size_sigma * normal(state))
                qty = notional / price
                u = uniform(state)
                k = 0
                while k < len(lev_cdf) - 1 and u > lev_cdf[k]:
                    k += 1
                lev = levs[k]
                side = 1.0 if uniform(state) < p_long else -1.0
                liq = binance_liquidation_price(side, qty, price, notional / lev, p.mmr, 0.0)
                if liq <= 0.0:
                    continue
                b = log_bin(np.log(liq), lo, BIN_WIDTH, nb)
                if side > 0:
                    long_q[b] += qty / scale
                    long_tot += qty
                else:
                    short_q[b] += qty / scale
                    short_tot += qty
                flow += side * notional
            closed_long = long_tot * hz
            closed_short = short_tot * hz
            long_tot -= closed_long
            short_tot -= closed_short
            scale *= 1.0 - hz
            if scale < 1e-200:     # renormalise before the lazy scale underflows (~700 days)
                long_q *= scale
                short_q *= scale
                scale = 1.0
            flow += (closed_short - closed_long) * price
            # -- price: shock + impact of voluntary and forced flow + reversion + news
            depth = depth0 / (1.0 + p.thin_k * liq_ewma / p.depth_per_pct)
            total_flow = flow + pending_flow
            dlog = sub_sigma * normal(state) + total_flow / depth
            if shock_min + warmup <= m < shock_min + warmup + p.shock_minutes:
                dlog += shock_dir * p.shock_pct / (p.shock_minutes * substeps)
            dev = logp - anchor
            revert = 0.0
            if dev > p.revert_band:
                revert = -p.revert_per_min / substeps * (dev - p.revert_band)
            elif dev < -p.revert_band:
                revert = -p.revert_per_min / substeps * (dev + p.revert_band)
            dlog += revert
            if revert > 0:         # dip buyers and profit takers trade as takers
                buy_n += revert * depth
            else:
                sell_n -= revert * depth
            executed = pending_flow
            pending_flow = 0.0
            if total_flow > 0:
                buy_n += total_flow
            else:
                sell_n -= total_flow
            logp_prev = logp
            logp += dlog
            price = np.exp(logp)
            # -- forced closes of every bin the mark crossed (executed next sub-step)
            forced = 0.0
            if logp < logp_prev:
                b_hi = log_bin(logp_prev, lo, BIN_WIDTH, nb)
                b_lo = log_bin(logp, lo, BIN_WIDTH, nb)
                for b in range(b_hi, b_lo - 1, -1):
                    liq_px = np.exp(lo + (b + 0.5) * BIN_WIDTH)
                    q = long_q[b] * scale
                    if q > 0.0 and liq_px >= price:
                        long_q[b] = 0.0
                        long_tot -= q
                        forced -= q * liq_px
                        liq_long += q * liq_px
                        if n_ev < max_ev and m >= warmup:
                            ev_ts[n_ev] = m - warmup
                            ev_side[n_ev] = 1
                            ev_price[n_ev] = liq_px
                            ev_qty[n_ev] = q
                            n_ev += 1
            else:
                b_lo = log_bin(logp_prev, lo, BIN_WIDTH, nb)
                b_hi = log_bin(logp, lo, BIN_WIDTH, nb)
                for b in range(b_lo, b_hi + 1):
                    liq_px = np.exp(lo + (b + 0.5) * BIN_WIDTH)
                    q = short_q[b] * scale
                    if q > 0.0 and liq_px <= price:
                        short_q[b] = 0.0
                        short_tot -= q
                        forced += q * liq_px
                        liq_short += q * liq_px
                        if n_ev < max_ev and m >= warmup:
                            ev_ts[n_ev] = m - warmup
                            ev_side[n_ev] = -1
                            ev_price[n_ev] = liq_px
                            ev_qty[n_ev] = q
                            n_ev += 1
            pending_flow = forced
            liq_ewma += a_liq / substeps * (abs(forced) * substeps - liq_ewma)
            wick = p.wick_k * abs(executed) / depth
            h_mark = max(h_mark, price)
            l_mark = min(l_mark, price)
            h_last = max(h_last, price * (1.0 + wick) if executed > 0 else price)
            l_last = min(l_last, price * (1.0 - wick) if executed < 0 else price)
            imb = (long_tot - short_tot) / (long_tot + short_tot + 1e-12)
            premium = p.premium_k * imb + p.premium_noise * normal(state)
            prem_sum += premium
            prem_n += 1
        # -- minute bookkeeping
        c = np.exp(logp)
        ret = abs(logp - logp_open)
        activity = 1.0 + p.activity_k * np.sqrt(max(ret / p.sigma_1m - 1.0, 0.0))
        bg = p.base_quote_volume * np.exp(p.volume_sigma * normal(state)) * activity
        bg_buy_share = 0.5 + 0.04 * normal(state)
        qv = bg + buy_n + sell_n
        tb_q = bg * bg_buy_share + buy_n
        funding = np.nan
        if (m + 1) % 480 == 0:
            funding = funding_rate_from_premium(prem_sum / max(prem_n, 1))
            prem_sum = 0.0
            prem_n = 0
        anchor += a_anchor * (logp - anchor)
        if m < warmup:
            continue
        lot = long_tot * c
        sht = short_tot * c
        oi_quote = p.passive_oi_quote + max(lot, sht)
        out[m - warmup, 0] = o_mark
        out[m - warmup, 1] = max(h_last, o_mark, c)
        out[m - warmup, 2] = min(l_last, o_mark, c)
        out[m - warmup, 3] = c
        out[m - warmup, 4] = qv / c
        out[m - warmup, 5] = qv
        out[m - warmup, 6] = np.floor(p.base_trades * (qv / p.base_quote_volume) ** p.trades_exp)
        out[m - warmup, 7] = tb_q / c
        out[m - warmup, 8] = tb_q
        out[m - warmup, 9] = o_mark
        out[m - warmup, 10] = max(h_mark, c)
        out[m - warmup, 11] = min(l_mark, c)
        out[m - warmup, 12] = c
        out[m - warmup, 13] = premium
        out[m - warmup, 14] = funding
        out[m - warmup, 15] = oi_quote / c
        out[m - warmup, 16] = lot / sht if sht > 0 else np.nan
        out[m - warmup, 17] = liq_long
        out[m - warmup, 18] = liq_short
        if (m - warmup) % snap_every == snap_every - 1 and n_snap < n_snap_max:
            for j in range(nb):          # element-wise: no shape-checked copy to compile
                snap[n_snap, 0, j] = long_q[j] * scale
                snap[n_snap, 1, j] = short_q[j] * scale
            n_snap += 1
    return out, ev_ts[:n_ev], ev_side[:n_ev], ev_price[:n_ev], ev_qty[:n_ev], snap[:n_snap]


def _shock(spec: SynthSpec) -> tuple[int, float]:
    """Minute and direction of the news shock: last day, 12:00-20:00 UTC, seeded."""
    rng = np.random.default_rng(spec.seed)   # Python-side choice only; numba uses rng.py
    last_day = (spec.days - 1) * 1440
    minute = last_day + int(rng.integers(12 * 60, 20 * 60))
    sign = -CROWDING_BIAS[spec.crowding] or float(rng.choice([-1.0, 1.0]))
    return minute, sign


class SpecError(LiqbotError, ValueError):
    """An invalid SynthSpec: a user error (exit 2) that is also a ValueError."""


def check_spec(spec: SynthSpec) -> None:
    """Seed, days, crowding and sizes in range; raises SpecError naming the option."""
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int | np.integer) \
            or not 0 <= spec.seed <= MAX_SEED:
        raise SpecError(f"--seed: expected an integer in 0 .. {MAX_SEED}, got {spec.seed!r}")
    if spec.crowding not in CROWDING_BIAS:
        raise SpecError(f"--crowding: expected one of long, short, none, got {spec.crowding!r}")
    if isinstance(spec.days, bool) or not isinstance(spec.days, int | np.integer) \
            or not 1 <= spec.days <= MAX_DAYS:
        raise SpecError(f"--days: expected 1 .. {MAX_DAYS}, got {spec.days!r}")
    if not 1 <= spec.substeps <= 64 or not 1 <= spec.snapshot_minutes <= 525_600:
        raise SpecError(f"substeps 1..64 and snapshot_minutes 1..525600, got {spec.substeps}, "
                        f"{spec.snapshot_minutes}")
    if not all(np.isfinite(v) for v in spec.params):
        raise SpecError("synthetic model parameters must be finite numbers")
    if not 0 < spec.params.start_price <= 1e9:
        raise SpecError(f"start_price: expected (0, 1e9], got {spec.params.start_price}")


def snapshot_minutes_for(days: int) -> int:
    """Book snapshot period: hourly up to a year, daily beyond (bounds the memory to about
    9,000 snapshots x 2 sides x 2,400 bins)."""
    return 60 if days <= 366 else 1440


def generate(spec: SynthSpec) -> Dataset:
    """Run the model; returns a Dataset with bars and the ground-truth tables."""
    check_spec(spec)
    n_min = spec.days * 1440
    shock_min, shock_dir = _shock(spec)
    cdf = np.cumsum(LEVERAGE_WEIGHTS) / LEVERAGE_WEIGHTS.sum()
    out, ev_m, ev_side, ev_px, ev_q, snap = _simulate(
        n_min, spec.substeps, spec.snapshot_minutes, spec.params,
        CROWDING_BIAS[spec.crowding], shock_min, shock_dir, LEVERAGES, cdf,
        make_state(spec.seed))
    ts = SYNTH_START_MS + np.arange(n_min, dtype=np.int64) * MINUTE_MS
    names = ("open", "high", "low", "close", "volume", "quote_volume", "trades",
             "taker_buy_volume", "taker_buy_quote_volume", "mark_open", "mark_high",
             "mark_low", "mark_close", "premium_close", "funding_rate", "open_interest",
             "long_short_ratio", "liq_long_notional", "liq_short_notional")
    cols = {"ts": ts, **{n: out[:, i] for i, n in enumerate(names)}}
    cols["trades"] = out[:, 6].astype(np.int64)
    cols["open_interest_value"] = out[:, 15] * out[:, 3]
    bars = Bars(spec.symbol, MINUTE_MS, cols)
    nb = snap.shape[2]
    lo = np.log(spec.params.start_price) - GRID_HALF_WIDTH
    centers = np.exp(lo + (np.arange(nb) + 0.5) * BIN_WIDTH)
    snap_ts = SYNTH_START_MS + (np.arange(len(snap), dtype=np.int64) + 1) * (
        spec.snapshot_minutes * MINUTE_MS)
    s_idx, side_idx, b_idx = np.nonzero(snap > 0)
    truth_book = {"ts": snap_ts[s_idx], "side": np.where(side_idx == 0, 1, -1).astype(np.int8),
                  "liq_price": centers[b_idx], "qty": snap[s_idx, side_idx, b_idx]}
    truth_liq = {"ts": SYNTH_START_MS + ev_m.astype(np.int64) * MINUTE_MS, "side": ev_side,
                 "price": ev_px, "qty": ev_q, "notional": ev_px * ev_q}
    meta = {"generator": {"model": MODEL_VERSION, "seed": spec.seed, "days": spec.days,
                          "crowding": spec.crowding, "substeps": spec.substeps,
                          "shock": iso(int(ts[shock_min])), "shock_direction": shock_dir,
                          "bin_width": BIN_WIDTH, "params": spec.params._asdict()}}
    return Dataset(bars, "synthetic", [], {"truth_liquidations": truth_liq,
                                           "truth_book": truth_book}, meta)


def spec_with(spec: SynthSpec, **params: float) -> SynthSpec:
    """A copy of `spec` with some model parameters replaced."""
    return replace(spec, params=spec.params._replace(**params))
