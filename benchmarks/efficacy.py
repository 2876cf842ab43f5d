"""Risk-rule efficacy on real crash days and calm days: the table of docs/risk.md.

Usage: python benchmarks/efficacy.py [path/to/shared/data] > table.md   (`make efficacy`)
       python benchmarks/efficacy.py [path] --stress F [--stress-span period]   (the crash
       tables only, each crash's returns, or the whole period's up to it, multiplied by F:
       `stressed`)

Policies: risk off; halts only (balanced's daily-loss and drawdown halts, no liquidation
rules; each halt releases after its cool-down); plain stop (out at balanced's 30% drawdown
from the peak and out for good: the stop-loss a trader would set); liquidation rules only
(balanced with the halts off); the full balanced policy.
Cascades: `hold` long 10x (entry sizing) on every whole-day klines file of klines_1m
(SYMBOL-1m-DAY_to_DAY.csv; in ../shared the two real BTCUSDT periods; a run of Binance
Vision daily files SYMBOL-1m-DAY.zip counts as one), with the symbol's Binance funding
joined when present (SYMBOL_funding_*.csv, else its rows of funding_all_*.csv.gz), and
again with the vendor 4h series joined when a coinglass_4h span covers a BTC period
(2025-10-08..12). Entry sweep: the same hold
opened on a fresh account every 4 hours up to 4 hours before each period's largest 1h drop
(one table row per period: counts of entries meeting each acceptance line). Calm days: every UTC day of the
BTC files and of the alt months in which no clock hour moves more than 2% (close vs open;
a second table: no 60-minute window inside the day does), each scored on a FRESH account
opened at the day's 00:00 UTC (signals and strategy warm on the file's bars before it, at
least 24h; nothing else carried: no position, halt, drawdown or hysteresis from the days
around it), for `hold` 3x and `trend` 5x. Give-up =
sum over the calm days with a positive risk-off return of (off - on) / the sum of those
off returns. ONSET and latency are defined in docs/risk.md.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from backtests import engine as eg
from backtests.runner import Inputs, RunSettings, interventions, prepare, run
from bot.data.bars import MARKS_FROM_TRADES, Bars, mark_coverage
from bot.data.dataset import iso
from bot.data.importer import build_dataset
from bot.data.validate import fill_gaps, find_gaps
from bot.errors import DataError
from bot.mechanics.brackets import Brackets, describe, for_symbol, stand_in_note
from bot.risk import engine as en
from bot.risk.policy import RiskPolicy, load_policy, off_policy
from bot.risk.reasons import reason_names
from bot.signals import detectors as dt
from bot.signals import positioning as ps
from strategies import find
from strategies.base import Strategy

# crash periods: every whole-day 1m klines file of klines_1m (SYMBOL-1m-DAY_to_DAY.csv[.gz]);
# in ../shared: BTCUSDT 2025-10-08..12 and 2026-02-03..07 (the hour windows are not whole days)
PERIOD_FILE = re.compile(r"^([A-Z0-9]+)-1m-(\d{4}-\d{2}-\d{2})_to_(\d{4}-\d{2}-\d{2})\.csv(\.gz)?$")
# Binance Vision's daily klines files (SYMBOL-1m-DAY.zip, or unpacked .csv[.gz]): each run of
# consecutive days of one symbol is one period, as if it were one DAY_to_DAY file
DAY_FILE = re.compile(r"^([A-Z0-9]+)-1m-(\d{4}-\d{2}-\d{2})\.(csv|csv\.gz|zip)$")
VENDOR_SPAN = re.compile(r"^4h_(\d{4}-\d{2}-\d{2})_to_(\d{4}-\d{2}-\d{2})$")
# state series only: the vendor's event columns (4h liquidation sums) would land on one 1m bar
VENDOR_FILES = ("api_futures_openInterest_ohlc_aggregated_history_BTC.csv",
                "api_futures_fundingRate_oi_weight_ohlc_history_BTC.csv",
                "api_futures_global_long_short_account_ratio_history.csv",
                "api_futures_top_long_short_position_ratio_history.csv")
# alt months (klines_1m/alts/SYMBOL-1m-YYYY-MM.csv.gz): calm days, and the crash periods'
# days where a month covers them; their funding from the multi-symbol funding file
ALT_FILE = re.compile(r"^([A-Z0-9]+)-1m-(\d{4}-\d{2})\.csv(\.gz)?$")
ALL_FUNDING = "funding_all_*.csv.gz"
CALM_MOVE = 0.02
ONSET_K = 3.0


#: the plain stop's cool-down: never over (a stop-loss that exits and stays out)
NEVER_H = 1e12


def policies() -> dict[str, RiskPolicy]:
    bal = load_policy("balanced")
    halts = bal.model_copy(update=dict(
        min_liq_atr=0.0, liq_release_atr=0.0, lev_base=1e9, lev_min=1e9,
        cluster_k_atr=0.0, cascade_mode=False, hedge=False))
    return {"risk off": off_policy(),
            "halts only": halts,
            # the stop-loss of the product claim: out at balanced's drawdown from the peak,
            # and out for good (no daily-loss halt, no cool-down, no re-entry)
            "plain stop": halts.model_copy(update=dict(daily_loss=1.0,
                                                       drawdown_cooldown_hours=NEVER_H)),
            "liquidation rules only": bal.model_copy(update=dict(daily_loss=1.0,
                                                                 max_drawdown=1.0)),
            "full policy": bal}


def load_bars(paths: list[Path]) -> Bars:
    """The files' bars, missing minutes filled flat at the previous close (flagged, as
    `liqbot data import --fill-gaps`; named on stderr): real exchange files lose minutes, and
    one lost minute must not stop the whole measurement."""
    bars = build_dataset(paths, allow_gaps=True).bars
    # the symbol's worst file: one file without marks puts its rows on trade prices
    MARKS[bars.symbol] = min(MARKS.get(bars.symbol, 1.0), mark_coverage(bars))
    gaps = find_gaps(bars.ts, bars.interval_ms)
    if gaps:
        print(f"efficacy: {paths[0].name}: {sum(g.missing for g in gaps)} missing bar(s) in "
              f"{len(gaps)} gap(s) filled flat at the previous close (first from "
              f"{iso(gaps[0].start_ms)})", file=sys.stderr)
        bars = fill_gaps(bars)
    return bars


def onset(bars: Bars) -> tuple[int, int]:
    """(first bar of the largest 1h drop, ONSET): the first bar of that window whose close
    is ONSET_K sigma-hours below the close 60 bars earlier (sigma: 1m log returns over the
    day before the window; with under an hour of bars before the window, ONSET is its first
    bar). The window ends at bar 60 or later: a drop inside a file's first hour is not seen."""
    lc = np.log(bars["close"])
    r60 = np.full(len(lc), np.inf)
    r60[60:] = lc[60:] - lc[:-60]
    end = int(np.argmin(r60))
    s = end - 60
    if s < 60:            # under an hour of history before the drop: no sigma, its first bar
        return s, s
    sd = np.diff(lc[max(0, s - 1440):s + 1]).std() * np.sqrt(60.0)
    hit = [t for t in range(s, end + 1) if lc[t] - lc[t - 60] <= -ONSET_K * sd]
    return s, (hit[0] if hit else end)


STRESS_AFTER = 120       # bars after ONSET the stress test still amplifies


def stressed(bars: Bars, factor: float, span: str = "crash") -> Bars:
    """The period with its crash amplified: every 1m log return from 60 bars before the
    largest 1h drop (span "period": from the period's first bar, so the run-up to the crash,
    a grind on 2026-02, is amplified with it) to STRESS_AFTER bars after ONSET multiplied by
    `factor`, each bar's open, high and low scaled about its close by the same factor, and
    the bars after the window shifted by the extra move (volumes, funding and positioning
    columns as they were). A deeper (or, below 1, milder) crash of the same shape: what a
    rule tuned to the real depth would do on a worse day."""
    start, on = onset(bars)
    a = 1 if span == "period" else max(1, start - 60)
    z = min(len(bars), on + STRESS_AFTER)
    lo, lh, ll, lc = (np.log(bars[k]) for k in ("open", "high", "low", "close"))
    r = np.diff(lc, prepend=lc[0])
    r[a:z] *= factor
    nc = lc[0] + np.cumsum(r) - r[0]
    shift = nc - lc
    no, nh, nl = lo + shift, lh + shift, ll + shift
    w = slice(a, z)
    no[w], nh[w], nl[w] = (nc[w] + (x[w] - lc[w]) * factor for x in (lo, lh, ll))
    cols = dict(bars.columns)
    cols.update(open=np.exp(no), high=np.exp(np.maximum(np.maximum(nh, no), nc)),
                low=np.exp(np.minimum(np.minimum(nl, no), nc)), close=np.exp(nc))
    return Bars(bars.symbol, bars.interval_ms, cols)


def latency(det: np.ndarray, on: int) -> str:
    """Minutes from ONSET to the first long-cascade bar within [onset - 60, onset + 60]."""
    fired = np.flatnonzero(det[max(0, on - 60):on + 61, dt.D_CASCADE_STATE] == 1.0)
    return f"{int(fired[0]) + max(0, on - 60) - on:+d} min" if len(fired) else "not detected"


TIERS: list[Path | None] = [None]       # --tiers FILE (set by `main`)
MARKS: dict[str, float] = {}            # symbol -> the lowest share of bars with mark klines
USED: dict[str, Brackets] = {}          # symbol -> the table it ran on


def brackets_of(symbol: str) -> Brackets:
    """The symbol's table from --tiers, else its shipped Binance table (BTCUSDT, ETHUSDT),
    else BTCUSDT's as the stand-in (`brackets.for_symbol`; no tier data for the alts in
    ../shared: docs/risk.md, "Alt brackets"). Recorded in USED for the printed note."""
    b = for_symbol(symbol, TIERS[0])
    USED[symbol] = b
    return b


def brackets_note() -> str:
    """One line: which leverage-bracket table each scored symbol ran on."""
    own = [describe(s, b) for s, b in sorted(USED.items()) if not stand_in_note(s, b)]
    stand = [s for s, b in sorted(USED.items()) if stand_in_note(s, b)]
    return "- leverage brackets: " + "; ".join(own + ([
        f"{', '.join(stand)} on BTCUSDT's as a stand-in (no table of their own in the "
        "repository or ../shared; `--tiers FILE` scores them on theirs)"] if stand else []))


def marks_note() -> str:
    """One line: which prices the liquidations ran on."""
    trades = sorted(s for s, m in MARKS.items() if m == 0.0)
    marks = sorted(s for s, m in MARKS.items() if m == 1.0)
    part = sorted(f"{s} ({m:.1%} of its bars)" for s, m in MARKS.items() if 0.0 < m < 1.0)
    parts = ([f"{', '.join(marks)} on mark-price klines"] if marks else []) + \
        ([f"{', '.join(part)} on mark-price klines where present"] if part else []) + \
        ([f"{', '.join(trades)} on {MARKS_FROM_TRADES}"] if trades else [])
    return "- mark prices: " + "; ".join(parts)


ENTRY_EVERY = 240         # entry sweep: a fresh 10x long every 4 hours from the first bar ...
ENTRY_GAP = 240           # ... up to 4 hours before the largest 1h drop begins
ENTRY_HEAD = ("| period | entries (every 4h, up to 4h before the largest 1h drop) | risk off "
              "liquidated | liquidation rules only: liquidated; drawdown mean / worst; drawdown "
              "<= half of risk off's | full policy: liquidated; drawdown mean / worst | full "
              "policy drawdown <= halts only's | full policy return >= halts only's | full "
              "policy drawdown <= the plain stop's | full policy return >= the plain stop's |\n"
              "|---|---|---|---|---|---|---|---|---|")


def entry_starts(drop_start: int) -> list[int]:
    """The sweep's entry bars: 0, 4h, 8h, ... at least ENTRY_GAP bars before the first bar of
    the largest 1h drop (the table's own entry, bar 0, is the first)."""
    return list(range(0, drop_start - ENTRY_GAP + 1, ENTRY_EVERY))


def entry_row(label: str, runs: dict[str, list[dict[str, Any]]]) -> str:
    """One row of the entry sweep from each policy's run metrics, entry by entry (the lists
    aligned): counts of entries meeting each acceptance line, drawdowns mean and worst."""
    off, halts, stop = runs["risk off"], runs["halts only"], runs["plain stop"]
    liq, full = runs["liquidation rules only"], runs["full policy"]
    n = len(off)
    if n == 0:
        return (f"| {label} | 0 (the drop begins within {ENTRY_GAP // 60}h of the first bar) "
                "| - | - | - | - | - | - | - |")

    def n_liq(v: list[dict[str, Any]]) -> int:
        return sum(m["liquidations"] > 0 for m in v)

    def dds(v: list[dict[str, Any]]) -> str:
        d = [m["max_drawdown"] for m in v]
        return f"{np.mean(d):.1%} / {max(d):.1%}" if d else "-"

    half = sum(liq[i]["max_drawdown"] <= 0.5 * off[i]["max_drawdown"] for i in range(n))
    def beats(base: list[dict[str, Any]]) -> str:
        dd = sum(full[i]["max_drawdown"] <= base[i]["max_drawdown"] for i in range(n))
        ret = sum(full[i]["total_return"] >= base[i]["total_return"] for i in range(n))
        return f"{dd} of {n} | {ret} of {n}"

    return (f"| {label} | {n} | {n_liq(off)} of {n} | {n_liq(liq)}; {dds(liq)}; {half} of {n} | "
            f"{n_liq(full)}; {dds(full)} | {beats(halts)} | {beats(stop)} |")


HORIZONS = (360, 720, 1440)    # bars after the onset at which full and stop are compared
HORIZON_HEAD = ("| period | full policy - plain stop, return points at onset + 6h / + 12h / "
                "+ 24h / the period's end | bars from the onset to the end with full >= stop "
                "| full - stop over those bars, min / max |\n|---|---|---|---|")


def horizon_row(label: str, on: int, full: np.ndarray, stop: np.ndarray, wallet: float) -> str:
    """Full policy against the plain stop at several ends after the onset (equity series
    `full`, `stop`, bar by bar): whether "more return than the stop" depends on where the
    period happens to end."""
    d = (full[on:] - stop[on:]) / wallet * 100.0
    at = [f"{d[h]:+.1f}" if h < len(d) else "-" for h in HORIZONS] + [f"{d[-1]:+.1f}"]
    ahead = int((d >= 0.0).sum())
    return (f"| {label} | {' / '.join(at)} | {ahead} of {len(d)} ({ahead / len(d):.0%}) | "
            f"{d.min():+.1f} / {d.max():+.1f} |")


def cascade_rows(label: str, bars: Bars, out: list[str], entries: list[str] | None = None,
                 horizons: list[str] | None = None) -> tuple[Inputs, dict[str, Any]]:
    """`hold` long 10x under each policy: the table rows (appended to `out`); returns the
    prepared inputs and the runs by policy (the crowding-lead note reads them). With
    `entries`, the entry sweep's row is appended to it: the same hold opened on a fresh
    account at every bar of `entry_starts` (an honest table cannot rest on one entry time)."""
    br = brackets_of(bars.symbol)
    s = RunSettings()
    inputs = prepare(bars, br, s)
    start, on = onset(bars)
    lat = latency(inputs.signals.detectors, on)
    strat = find("hold").from_strings({"side": "long", "leverage": "10"})
    runs = {}
    for pname, pol in policies().items():
        res = runs[pname] = run(inputs, strat, pol, br, s, pname)
        m = res.metrics
        liq = f"{m['liquidations']} ({m['liquidated_at']})" if m["liquidations"] else "0"
        out.append(f"| {label} | {pname} | {liq} | {m['max_drawdown']:.1%} | "
                   f"{m['total_return']:+.1%} | {m['n_risk_actions']} | "
                   f"{lat if pname != 'risk off' else '-'} |")
    out.append(f"| {label} | (onset {iso(int(bars.ts[on]))}, largest 1h drop from "
               f"{iso(int(bars.ts[start]))}) | | | | | |")
    if entries is not None:
        # the first entry (bar 0) is the table's own run
        swept = {p: [runs[p].metrics if a == 0 else
                     run(inputs, strat, pol, br, s, p, start=a,
                         record_columns=eg.N_REC_CORE).metrics for a in entry_starts(start)]
                 for p, pol in policies().items()}
        entries.append(entry_row(label, swept))
    if horizons is not None:
        horizons.append(horizon_row(label, on, runs["full policy"].records[:, eg.R_EQUITY],
                                    runs["plain stop"].records[:, eg.R_EQUITY], s.wallet))
    return inputs, runs


def crowding_lead(bars: Bars, inputs: Inputs, res: Any) -> list[str]:
    """What crowding and the map did before the largest hourly drop (vendor data joined):
    `inputs` and `res` (the liquidation-rules-only run) from `cascade_rows`."""
    start, _ = onset(bars)
    pos = inputs.signals.positioning
    pre = slice(max(0, start - 1440), start)
    reasons = res.records[:, eg.R_REASONS].astype(np.int64)
    acted = np.flatnonzero(((reasons & (en.R_CROWDING | en.R_CLUSTER | en.R_HEDGE)) != 0)
                           & (res.records[:, eg.R_CLIPPED] > 0))
    before = acted[acted < start]
    lines = [f"- crowding (long) in the 24h before the largest 1h drop: max "
             f"{np.nanmax(pos[pre, ps.C_LONG_SCORE]):.2f} (hedge threshold 0.8); at its start "
             f"{pos[start, ps.C_LONG_SCORE]:.2f}; OI 24h change "
             f"{pos[start, ps.C_OI_24H]:+.1%}, OI-weighted funding "
             f"{bars['funding_rate_avg'][start] * 100:+.4f}%/8h, long/short accounts "
             f"{bars['long_short_ratio'][start]:.2f}, top traders "
             f"{bars['top_long_short_ratio'][start]:.2f}"]
    if len(before):
        lead = start - int(before[-1])
        lines.append(f"- a crowding/cluster/hedge cut bound {len(before)} bars before the drop, "
                     f"the last {lead} min before it (first at {iso(int(bars.ts[before[0]]))})")
    else:
        lines.append("- no crowding, cluster or hedge cut bound before the drop began")
    # what the other rules had done by then (the cascade rule on the day's earlier drops):
    # the first binding bar after the position last held 90% of its target leverage
    rec = res.records
    full = np.flatnonzero(rec[pre, eg.R_LEVERAGE] >= 0.9 * rec[pre, eg.R_TARGET_LEV])
    k0 = pre.start + (int(full[-1]) if len(full) else 0)
    cut = np.flatnonzero(rec[k0:start, eg.R_CLIPPED] > 0)
    if len(cut) and rec[start, eg.R_LEVERAGE] < 0.9 * rec[start, eg.R_TARGET_LEV]:
        k = k0 + int(cut[0])
        lines.append(f"- the 10x long held {rec[start, eg.R_LEVERAGE]:.1f}x when the drop "
                     f"began (liquidation rules only): cut from {iso(int(bars.ts[k]))}, "
                     f"{(start - k) // 60}h{(start - k) % 60:02d} ahead, rules active "
                     f"{', '.join(reason_names(int(reasons[k])))}")
    return lines


VENDOR_PRICE = "api_price_ohlc_history.csv"


def span_percentiles(span_dir: Path, bars: Bars, inputs: Inputs) -> list[str]:
    """Where the positioning read at the start of the largest 1h drop stood in the vendor
    span's own history before it (4h buckets closed before the drop): the percentile of the
    long/short account ratio, the top-trader position ratio, the OI-weighted funding and the
    24h OI change, so "no warning" can be told from "a warning the score missed"."""
    paths = [span_dir / VENDOR_PRICE, *(span_dir / f for f in VENDOR_FILES)]
    if not all(p.is_file() for p in paths):
        return []
    span = load_bars(paths)
    start, _ = onset(bars)
    drop_ms = int(bars.ts[start])
    seen = span.ts + span.interval_ms <= drop_ms
    # the span's 24h OI change as the signals compute it, on its own 4h bars
    span_pos = prepare(span, brackets_of(span.symbol), RunSettings()).signals.positioning
    reads = (("long/short accounts", span["long_short_ratio"], bars["long_short_ratio"][start]),
             ("top traders", span["top_long_short_ratio"], bars["top_long_short_ratio"][start]),
             ("OI-weighted funding", span["funding_rate_avg"], bars["funding_rate_avg"][start]),
             ("OI 24h change", span_pos[:, ps.C_OI_24H],
              inputs.signals.positioning[start, ps.C_OI_24H]))
    parts, pcts = [], []
    for name, hist, now in reads:
        h = hist[seen & np.isfinite(hist)]
        if len(h) and np.isfinite(now):
            pcts.append(float(np.mean(h < now)))
            parts.append(f"{name} {100.0 * pcts[-1]:.0f}")
    if not parts:
        return []
    verdict = ("none beyond the 10th-90th: the crowd was not one-sided by any of these, so "
               "there was nothing to warn on" if all(0.1 <= x <= 0.9 for x in pcts)
               else "at least one beyond the 10th-90th")
    return [f"- where each stood at the drop's start among the {int(seen.sum())} 4h buckets of "
            f"{span_dir.name} before it (percentile): {', '.join(parts)}; {verdict}"]


def calm_days(bars: Bars, rolling: bool = False) -> list[tuple[int, int]]:
    """[start, end) bar ranges of the UTC days in which no clock hour moves > CALM_MOVE
    (close of its last bar vs open of its first). `rolling`: no 60-bar window inside the
    day does either (a swing straddling two clock hours is caught too)."""
    day = bars.ts // 86_400_000
    hour = bars.ts // 3_600_000
    c = bars["close"]
    o = bars["open"]
    out = []
    for d in np.unique(day):
        idx = np.flatnonzero(day == d)
        if len(idx) < 1440:
            continue
        if rolling:
            ok = bool(np.all(np.abs(c[idx[59:]] / o[idx[:-59]] - 1.0) <= CALM_MOVE))
        else:
            ok = all(abs(c[j[-1]] / o[j[0]] - 1.0) <= CALM_MOVE
                     for h in np.unique(hour[idx]) for j in [idx[hour[idx] == h]])
        if ok:
            out.append((int(idx[0]), int(idx[-1]) + 1))
    return out


WARM_BARS = 1440          # signals warm on at least this many bars before a calm day


#: one calm day of one policy: return, binding interventions, the reasons of those
#: episodes (bitmask), trades, and fees + slippage as a share of the wallet
DayScore = tuple[float, int, int, int, float]


def day_scores(inputs: Inputs, strat: Strategy, pol: RiskPolicy, br: Brackets,
               s: RunSettings, days: list[tuple[int, int]]) -> list[DayScore]:
    """Per calm day [a, b): a DayScore of a FRESH account opened at the day's first bar
    (signals and strategy warm on the bars before it), scored on the day only."""
    out = []
    for a, b in days:
        res = run(inputs, strat, pol, br, s, "calm", start=a)
        rec = res.records[a:b]
        clip = rec[:, eg.R_CLIPPED] > 0.0
        why = int(np.bitwise_or.reduce(rec[clip, eg.R_REASONS].astype(np.int64))) \
            if clip.any() else 0
        trd = res.trades[(res.trades[:, 0] >= a) & (res.trades[:, 0] < b)]
        out.append((rec[-1, eg.R_EQUITY] / s.wallet - 1.0, interventions(rec), why, len(trd),
                    float(trd[:, 4].sum() + trd[:, 5].sum()) / s.wallet))
    return out


CALM_VIEWS = ("clock hours", "rolling 60 min")


def calm_table(files: list[list[Path]]) -> list[str]:
    """Calm-day interventions and give-up, each calm day scored on a fresh account; one
    table per calm-day filter of CALM_VIEWS (the rolling days are a subset of the clock-hour
    days, scored once)."""
    s = RunSettings()
    strats = [find("hold").from_strings({"side": "long", "leverage": "3"}),
              find("trend").from_strings({"leverage": "5"})]
    pols = policies()
    # the same on the days risk off lost less than the balanced daily-loss limit (days on
    # which no halt was due)
    limit = load_policy("balanced").daily_loss
    tally = {v: _CalmTally(pols, strats) for v in CALM_VIEWS}
    for paths in files:
        bars = load_bars(paths)
        all_days = calm_days(bars)
        rolling = set(calm_days(bars, rolling=True))
        days = [(a, b) for a, b in all_days if a >= WARM_BARS]
        tally[CALM_VIEWS[0]].skipped += len(all_days) - len(days)
        tally[CALM_VIEWS[1]].skipped += len(rolling) - len(rolling.intersection(days))
        tally[CALM_VIEWS[0]].n_days += len(days)
        tally[CALM_VIEWS[1]].n_days += len(rolling.intersection(days))
        if not days:
            continue
        br = brackets_of(bars.symbol)
        inputs = prepare(bars, br, s)
        for strat in strats:
            scores = {p: day_scores(inputs, strat, pol, br, s, days) for p, pol in pols.items()}
            for k, day in enumerate(days):
                one = {p: v[k] for p, v in scores.items()}
                tally[CALM_VIEWS[0]].add(strat.name, one, limit)
                if day in rolling:
                    tally[CALM_VIEWS[1]].add(strat.name, one, limit)
    rows: list[str] = []
    for view, t in tally.items():
        moving = "clock hour" if view == CALM_VIEWS[0] else "60-minute window"
        rows += [f"Calm days ({view}): {t.n_days} (crash-period files and alt months, no {moving} "
                 f"moving more than {CALM_MOVE:.0%}; {t.skipped} more without "
                 f"{WARM_BARS // 60}h of history before them skipped). Each is scored on a "
                 "FRESH account opened at 00:00 UTC (signals and the strategy warm on the "
                 "file's bars before it).", ""]
        rows += t.table(strats, limit) + [""]
    return rows[:-1]


class _CalmTally:
    """Sums of one calm-day view: days, binding episodes, positive-day returns, reasons."""

    def __init__(self, pols: dict[str, RiskPolicy], strats: list[Strategy]) -> None:
        names = [st.name for st in strats]
        self.n_days = 0
        self.skipped = 0
        self.binding = {p: dict.fromkeys(names, 0) for p in pols}
        self.n_mild = dict.fromkeys(names, 0)
        self.binding_mild = {p: dict.fromkeys(names, 0) for p in pols}
        self.pos_off = dict.fromkeys(names, 0.0)
        self.pos_on = {p: dict.fromkeys(names, 0.0) for p in pols}
        # every calm day, the losing ones too (give-up reads only the days risk off gained)
        self.all_on = {p: dict.fromkeys(names, 0.0) for p in pols}
        self.why: dict[str, dict[str, dict[str, int]]] = {p: {n: {} for n in names}
                                                          for p in pols}
        # risk off's own day: trades, costs (share of the wallet), return, days lost >= limit
        self.off_trades = dict.fromkeys(names, 0)
        self.off_costs = dict.fromkeys(names, 0.0)
        self.off_ret = dict.fromkeys(names, 0.0)
        self.off_lost = dict.fromkeys(names, 0)

    def add(self, name: str, day: dict[str, DayScore], limit: float) -> None:
        """One calm day of strategy `name`: a DayScore per policy."""
        r_off, _, _, n_trd, costs = day["risk off"]
        self.off_trades[name] += n_trd
        self.off_costs[name] += costs
        self.off_ret[name] += r_off
        self.off_lost[name] += int(r_off <= -limit)
        for p, (r_on, n_int, mask, _, _) in day.items():
            self.binding[p][name] += n_int
            if r_off > -limit:
                self.binding_mild[p][name] += n_int
            if r_off > 0.0:
                self.pos_on[p][name] += r_on
            self.all_on[p][name] += r_on
            for rule in reason_names(mask):
                self.why[p][name][rule] = self.why[p][name].get(rule, 0) + 1
        if r_off > 0.0:
            self.pos_off[name] += r_off
        self.n_mild[name] += int(r_off > -limit)

    def table(self, strats: list[Strategy], limit: float) -> list[str]:
        rows = ["| policy | strategy | binding interventions / calm day | same, on the days "
                f"risk off lost less than {limit:.0%} | sum of returns on the positive risk-off "
                "days (off -> on) | give-up | sum of returns on every calm day (off -> on) | "
                "days on which a rule was active while binding |",
                "|---|---|---|---|---|---|---|---|"]
        for p in self.binding:
            for strat in strats:
                n = strat.name
                off, on = self.pos_off[n], self.pos_on[p][n]
                give = (off - on) / off if off > 0 else 0.0
                rules = ", ".join(f"{k} {v}" for k, v in sorted(self.why[p][n].items())) or "-"
                rows.append(f"| {p} | {strat.describe()} | "
                            f"{self.binding[p][n] / max(self.n_days, 1):.2f} | "
                            f"{self.binding_mild[p][n] / max(self.n_mild[n], 1):.2f} "
                            f"({self.n_mild[n]} days) | {off:+.1%} -> {on:+.1%} | {give:.1%} | "
                            f"{self.off_ret[n]:+.1%} -> {self.all_on[p][n]:+.1%} | {rules} |")
        d = max(self.n_days, 1)
        rows += ["", "Risk off's own calm days (what the halts react to), per day:"]
        rows += [f"- {strat.name}: {self.off_trades[strat.name] / d:.1f} trades, fees + "
                 f"slippage {self.off_costs[strat.name] / d:.1%} of the wallet, mean return "
                 f"{self.off_ret[strat.name] / d:+.1%}; the day closed {limit:.0%} or more down "
                 f"on {self.off_lost[strat.name]} of {self.n_days} days" for strat in strats]
        return rows


def day_runs(kl: Path) -> list[tuple[str, str, str, list[Path]]]:
    """(first day, symbol, last day, files) per run of consecutive Vision daily files."""
    days: dict[str, dict[str, Path]] = {}
    for f in kl.iterdir():
        if m := DAY_FILE.match(f.name):
            days.setdefault(m.group(1), {}).setdefault(m.group(2), f)
    out = []
    for sym, got in days.items():
        run: list[str] = []
        for d in sorted(got):
            if run and np.datetime64(d) - np.datetime64(run[-1]) != np.timedelta64(1, "D"):
                out.append((run[0], sym, run[-1], [got[x] for x in run]))
                run = []
            run.append(d)
        out.append((run[0], sym, run[-1], [got[x] for x in run]))
    return out


def periods(kl: Path, funding_dir: Path, vendor_dir: Path,
            more_funding: Callable[[str], list[Path]] | None = None
            ) -> list[tuple[str, list[Path], list[Path]]]:
    """(label, klines + funding files, the same + vendor 4h state series or []) per crash
    period in `kl` (a DAY_to_DAY file, or a run of daily files), by start day. Funding:
    funding/SYMBOL_funding_*.csv if present, else `more_funding(symbol)` (the multi-symbol
    file); vendor series (BTC only): a coinglass_4h span directory covering the period."""
    out = []
    found = sorted([(m.group(2), m.group(1), m.group(3), [f]) for f in kl.iterdir()
                    if (m := PERIOD_FILE.match(f.name))] + day_runs(kl))
    for d0, sym, d1, paths in found:
        end = d1[8:] if d1[:7] == d0[:7] else d1[5:]
        label = f"{d0}..{end}" if sym == "BTCUSDT" else f"{sym} {d0}..{end}"
        fund = sorted(funding_dir.glob(f"{sym}_funding_*.csv"))[:1]
        files = paths + (fund if fund or more_funding is None else more_funding(sym))
        vendor: list[Path] = []
        spans = sorted(vendor_dir.iterdir()) if vendor_dir.is_dir() else []
        for span in spans:
            m = VENDOR_SPAN.match(span.name)
            if sym == "BTCUSDT" and m and m.group(1) <= d0 and d1 <= m.group(2) and \
                    all((span / f).is_file() for f in VENDOR_FILES):
                vendor = files + [span / f for f in VENDOR_FILES]
        out.append((label, files, vendor))
    return out


class AltFunding:
    """Alt funding from the multi-symbol funding file (`symbol,calc_time,
    funding_interval_hours,last_funding_rate`), read once; each symbol's rows written once
    as a one-symbol file in Binance's layout under `tmp` (outside the repository)."""

    def __init__(self, funding_dir: Path, tmp: Path) -> None:
        self.tmp = tmp
        self.rows: dict[str, list[str]] = {}
        found = sorted(funding_dir.glob(ALL_FUNDING)) if funding_dir.is_dir() else []
        if found:
            with gzip.open(found[0], "rt") as f:
                for line in f:
                    sym, _, rest = line.partition(",")
                    self.rows.setdefault(sym, []).append(rest)

    def files(self, symbol: str) -> list[Path]:
        """[the symbol's funding file], or [] when the file has no row for it."""
        rows = self.rows.get(symbol)
        if not rows:
            return []
        out = self.tmp / f"{symbol}_funding_from_all.csv"
        if not out.exists():
            out.write_text("calc_time,funding_interval_hours,last_funding_rate\n" +
                           "".join(rows))
        return [out]


def alt_months(alts: list[Path]) -> dict[str, dict[str, Path]]:
    """{symbol: {"YYYY-MM": file}} of the alt month files (other names ignored)."""
    out: dict[str, dict[str, Path]] = {}
    for path in alts:
        if m := ALT_FILE.match(path.name):
            out.setdefault(m.group(1), {})[m.group(2)] = path
    return out


def alt_rows(months: dict[str, dict[str, Path]], funding: AltFunding, start_ms: int,
             end_ms: int, days: str, out: list[str], stress: float | None, span: str,
             tag: str, entries: list[str] | None = None,
             horizons: list[str] | None = None) -> None:
    """`hold` long 10x on every alt whose month files cover [start_ms, end_ms) (a crash
    period's days; a period across two months reads both), with the alt's funding when the
    multi-symbol funding file has it. An alt that does not cover the days is named on
    stderr and skipped."""
    first, last = iso(start_ms)[:7], iso(end_ms - 1)[:7]
    for sym, files in sorted(months.items()):
        need = sorted(m for m in files if first <= m <= last)
        if not need or need[0] != first or need[-1] != last:
            print(f"efficacy: {sym}: no month file covers {days}", file=sys.stderr)
            continue
        try:
            bars = load_bars([files[m] for m in need] + funding.files(sym))
        except DataError as exc:
            print(f"efficacy: {sym} {days} skipped: {exc}", file=sys.stderr)
            continue
        if bars.start_ms > start_ms or bars.end_ms < end_ms:
            print(f"efficacy: {sym}: its months do not cover {days}", file=sys.stderr)
            continue
        bars = bars.between(start_ms, end_ms)
        if stress is not None:
            bars = stressed(bars, stress, span)
        cascade_rows(f"{sym} {days}{tag}", bars, out, entries, horizons)


def main() -> None:
    ap = argparse.ArgumentParser(description="Risk-rule efficacy: docs/risk.md's tables.")
    ap.add_argument("data", nargs="?", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data",
                    help="the shared data directory (default: ../shared/data)")
    ap.add_argument("--stress", type=float, metavar="F",
                    help="crash periods only, each crash's returns multiplied by F (> 0)")
    ap.add_argument("--tiers", type=Path, metavar="FILE",
                    help="leverage brackets (ccxt fetch_leverage_tiers JSON) holding every "
                         "symbol scored (default: the shipped tables, BTCUSDT's as the "
                         "stand-in for the alts)")
    ap.add_argument("--stress-span", choices=("crash", "period"), default="crash",
                    help="what --stress amplifies: the crash (from an hour before the largest "
                         "1h drop) or the whole period up to it (default: crash)")
    args = ap.parse_args()
    if args.stress is not None and not 0.0 < args.stress < 100.0:
        ap.exit(2, f"efficacy: --stress: expected a factor in (0, 100), got {args.stress}\n")
    if args.stress is None and args.stress_span != "crash":
        ap.exit(2, "efficacy: --stress-span needs --stress F\n")
    if args.tiers is not None and not args.tiers.is_file():
        ap.exit(2, f"efficacy: --tiers {args.tiers}: no such file\n")
    TIERS[0] = args.tiers
    try:
        _main(args)
    except DataError as exc:          # a --tiers file without a scored symbol, bad data
        ap.exit(2, f"efficacy: {exc}\n")


def _main(args: argparse.Namespace) -> None:
    kl = args.data / "binance_um" / "klines_1m"
    if not kl.is_dir():
        print(f"efficacy: no real klines at {kl} (expected ../shared/data beside the "
              "repository, or its path as the first argument)", file=sys.stderr)
        raise SystemExit(2)
    out = ["| period | policy | liquidations (first) | max drawdown | return | binding "
           "interventions | detector latency vs onset |", "|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    # the entry sweep (not under --stress: a stressed crash is scored from the table's entry)
    entries: list[str] | None = [] if args.stress is None else None
    horizons: list[str] | None = [] if args.stress is None else None
    tag = "" if args.stress is None else \
        f" ({'crash' if args.stress_span == 'crash' else 'period'} x{args.stress:g})"
    alts = sorted((kl / "alts").glob("*.csv.gz"))
    months = alt_months(alts)
    with tempfile.TemporaryDirectory() as tmp:
        funding = AltFunding(args.data / "binance_um" / "funding", Path(tmp))
        found = periods(kl, args.data / "binance_um" / "funding", args.data / "coinglass_4h",
                        funding.files)
        for label, files, vendor in found:
            span = None
            for lab, paths in ((label, files), (label + " + vendor 4h", vendor)):
                if not paths:
                    continue
                bars = load_bars(paths)
                span = span or (bars.start_ms, bars.end_ms)
                if args.stress is not None:
                    bars = stressed(bars, args.stress, args.stress_span)
                inputs, runs = cascade_rows(lab + tag, bars, out,
                                            entries if paths is files else None,
                                            horizons if paths is files else None)
                if paths is vendor and args.stress is None:
                    lead = crowding_lead(bars, inputs, runs["liquidation rules only"])
                    lead[1:1] = span_percentiles(vendor[-1].parent, bars, inputs)
                    notes += lead if not notes else [f"- {label}: {x[2:]}" for x in lead]
            if span is not None and months:
                alt_rows(months, funding, span[0], span[1], label.split(" ")[-1], out,
                         args.stress, args.stress_span, tag, entries, horizons)
            print(f"efficacy: {label} done", file=sys.stderr, flush=True)
        if not found:
            out.append(f"| (no SYMBOL-1m-DAY_to_DAY.csv file or SYMBOL-1m-DAY.zip daily "
                       f"files in {kl}) | | | | | | |")
        print("\n".join(out))
        if entries is None:
            return
        print()
        print(f"Entry sweep: the same `hold` long 10x opened on a fresh account every "
              f"{ENTRY_EVERY // 60} hours from each period's first bar up to "
              f"{ENTRY_GAP // 60} hours before its largest 1h drop (signals warm on the bars "
              "before), scored to the period's end; counts of entries meeting each "
              "acceptance line.")
        print()
        print(ENTRY_HEAD)
        print("\n".join(entries))
        print()
        print("Full policy against the plain stop after the onset (the table's entry): the "
              "return difference in points of the wallet at several ends, and how often the "
              "full policy was ahead.")
        print()
        print(HORIZON_HEAD)
        print("\n".join(horizons or []))
        print()
        print("\n".join([*notes, brackets_note(), marks_note()]))
        print()
        calm = [files for _, files, _ in found]
        calm += [[p, *funding.files(sym)] for sym, ms in sorted(months.items())
                 for _, p in sorted(ms.items())]
        print("\n".join(calm_table(calm)))


if __name__ == "__main__":
    main()
