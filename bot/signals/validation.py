"""Scoring the heatmap against a known truth (`liqbot heatmap validate`).

For a dataset with realised liquidations (a synthetic day's `truth_liquidations`, or
`liq_*_notional` bars of a real dataset, which have no price and are not used here), at a
reference time t0 we take the heatmap built from bars BEFORE t0 only, and the liquidations
realised in [t0, t0 + horizon). Two candidate sets, each with a random baseline of about 10%
(k random bins out of N capture k/N of whatever lies inside them on average):
- the ACTIVE GRID: every bin where the estimator holds mass or anything was realised. This
  is the heatmap as a trader sees it, and the acceptance metric;
- the VISITED RANGE: only the bins the mark price actually crossed in the horizon. This is
  much stricter: it asks how well the map ranks levels *given* where price went. Even the
  true position book at t0 scores only 0.1-0.25 on it in our synthetic days, because most
  of what is liquidated within 24h was opened after t0 and the synthetic book is smooth.
Scores per candidate set:
- capture_top10: share of realised notional inside the top 10% bins by predicted density;
- precision_top10: share of those top bins in which anything was realised;
- spearman: rank correlation of predicted vs realised density over the candidate bins.
For synthetic datasets `oracle_*` gives the same scores for the TRUE book at t0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bot.data.bars import MINUTE_MS
from bot.data.dataset import Dataset
from bot.mechanics.brackets import Brackets
from bot.signals import heatmap as hm


@dataclass(frozen=True)
class Score:
    t0_ms: int
    capture_top10: float          # active grid (acceptance metric)
    precision_top10: float
    spearman: float
    capture_top10_visited: float  # visited range (stricter)
    spearman_visited: float
    raw_mass_capture_top10: float  # ranking by raw mass instead of expected liquidations
    oracle_capture_top10: float   # true book at t0, active grid (NaN without a truth book)
    oracle_capture_top10_visited: float
    active_bins: int
    visited_bins: int
    realized_notional: float


def _top_scores(pred: np.ndarray, realized: np.ndarray, cand: np.ndarray) -> tuple[float, ...]:
    k = max(1, int(np.ceil(0.1 * len(cand))))
    top = cand[np.argsort(-pred[cand], kind="mergesort")[:k]]
    total = realized[cand].sum()
    capture = float(realized[top].sum() / total) if total > 0 else float("nan")
    precision = float((realized[top] > 0).mean())
    return capture, precision, spearman(pred[cand], realized[cand])


def _binned(prices: np.ndarray, amounts: np.ndarray, meta: np.ndarray, nb: int) -> np.ndarray:
    out = np.zeros(nb)
    for price, amount in zip(prices, amounts, strict=True):
        out[hm.bin_of(float(price), meta, nb)] += amount
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def score_at(ds: Dataset, brackets: Brackets, t0_index: int, horizon_bars: int = 1440,
             p: hm.HeatmapParams = hm.HeatmapParams()) -> Score:
    """Score the heatmap built on bars[:t0_index] against the truth of the next horizon."""
    bars = ds.bars
    truth = ds.tables.get("truth_liquidations")
    if truth is None:
        raise ValueError("dataset has no truth_liquidations table (synthetic datasets have it)")
    past = bars.take(slice(0, t0_index))
    run = hm.run(past, brackets, p)
    nb = run.mass.shape[1]
    close0 = float(past.close[-1])
    sigma_h = hm.trailing_sigma(past.close, 1440) * np.sqrt(horizon_bars) * p.reach_sigma_mult
    raw = run.mass[hm.LONG] + run.mass[hm.SHORT]
    pred = hm.expected_liquidations(run.mass, run.meta, close0, sigma_h)
    t0 = int(bars.ts[t0_index])
    t1 = t0 + horizon_bars * MINUTE_MS
    sel = (truth["ts"] >= t0) & (truth["ts"] < t1)
    realized = _binned(truth["price"][sel], truth["notional"][sel], run.meta, nb)
    fut = bars.take(slice(t0_index, min(t0_index + horizon_bars, len(bars))))
    hi = fut["mark_high"] if fut.has("mark_high") else fut["high"]
    lo = fut["mark_low"] if fut.has("mark_low") else fut["low"]
    visited = np.arange(hm.bin_of(float(lo.min()), run.meta, nb),
                        hm.bin_of(float(hi.max()), run.meta, nb) + 1)
    active = np.flatnonzero((pred > 0) | (realized > 0))
    cap, prec, rho = _top_scores(pred, realized, active)
    cap_v, _, rho_v = _top_scores(pred, realized, visited)
    raw_cap = _top_scores(raw, realized, active)[0]
    o_cap = o_cap_v = float("nan")
    book = ds.tables.get("truth_book")
    if book is not None and (book["ts"] <= t0).any():
        snap = book["ts"] == book["ts"][book["ts"] <= t0].max()
        true_mass = np.zeros((2, nb))
        true_mass[0] = _binned(book["liq_price"][snap], book["liq_price"][snap] *
                               book["qty"][snap], run.meta, nb)
        true = hm.expected_liquidations(true_mass, run.meta, close0, sigma_h)
        o_cap = _top_scores(true, realized, np.flatnonzero((true > 0) | (realized > 0)))[0]
        o_cap_v = _top_scores(true, realized, visited)[0]
    return Score(t0, cap, prec, rho, cap_v, rho_v, raw_cap, o_cap, o_cap_v, len(active),
                 len(visited), float(realized.sum()))
