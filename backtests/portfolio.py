"""Portfolio backtests: N symbols on ONE cross-margin account, one numba loop.

The bars of every symbol are put on one grid of int64 ms open times (the union of their
timestamps; a symbol without a bar at a grid time is stale for that bar: nothing of it
fills, settles or decides, its orders wait for its next bar and its mark stays at its last
close). The account is the kernel's `acct`/`pos` arrays with two slots per symbol
(2s = main, 2s+1 = hedge), all margined together in cross, exactly as the paper broker
holds them. Each grid bar runs the kernel's functions (`bot.execution.kernel`) in two
phases:

OPEN phase (the venue), every symbol with a bar, in symbol order:
1. funding (`settle_funding`, mark at the open) on the position held at the settlement,
   then the fills of the orders decided at the symbol's previous close (`fill_order`, with
   the fill model's window known at that close);
2. liquidation checks (`liquidate`) of every slot with a position: the slot's symbol at
   its adverse mark extreme inside the bar, every other symbol at its reference mark (its
   mark at this bar's open, or its last close when stale). The cross liquidation price is
   `bot.mechanics.account.liquidation_price` (the whole account's wallet, maintenance and
   unrealised PnL inside). A liquidation lowers the shared wallet, so the slots of the
   OTHER symbols are checked again in the same bar until nothing more is liquidated: a
   crash in one symbol can take the whole account. (With one symbol there is no other
   symbol to re-check, so the step is the single-symbol engine's exactly.)

CLOSE instant (the venue): every symbol at its mark close (stale symbols at their last),
the one instant at which all marks are known together, checked the same way: an account
that several symbols' falls took under its maintenance margin together, with none past
its own price against the others' opens, is liquidated here, symbol by symbol in symbol
order (`_liquidation_rounds`; until 2026-12-06 it stayed open until a later bar).

CLOSE phase (us), every symbol with a bar, in symbol order: `kernel.decide` per symbol at
the close marks (equity is the account's).

What the risk engine sees (`bot.risk.engine.evaluate_state` through `kernel.decide`):
- equity, day-start and peak equity: the ACCOUNT's, so the daily-loss and drawdown halts
  trip on the portfolio's equity (every symbol sees the same equity at the same close);
- the liquidation price: the cross price of the symbol's main slot given every other
  position at its mark (the liquidation-distance rule sees the whole account);
- notional: the symbol's own (the per-market rules act on it: leverage schedule by that
  market's crowding, cluster guard, cascade mode, hedge size, liquidation hysteresis);
- the hard leverage cap (`max_leverage`) is the PORTFOLIO's: it is split into per-symbol
  budgets in proportion to the strategy's absolute target leverages at this close
  (stale symbols count with their last target), budget_s = cap x |L_s| / sum |L|, so the
  budgets sum to the cap and the sum of the symbols' allowed notionals never exceeds
  cap x equity. The budget is passed as the symbol's `max_leverage` to the unchanged risk
  engine, whose decision therefore clips (and counts as a binding intervention) whenever
  the portfolio's target leverage is over the cap though every symbol's is under it. The
  hard-leverage reason bit then means "over its portfolio budget". With one symbol the
  budget is the cap itself.
Hedge slots are not in the budget (a hedge offsets its main leg).

Records: per symbol the single-symbol layout (`backtests.engine.R_*`, whose equity,
wallet, fees and funding columns are the account's) plus the symbol's own cumulative fees,
funding and PnL (realised + unrealised - fees - funding of its two slots) and whether it
had a bar; per grid bar the portfolio's equity, wallet, gross notional, leverage, fees,
funding and liquidations. Trades and decisions carry the engine's columns plus the symbol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from backtests import engine as eg
from backtests.metrics import MINUTES_PER_YEAR, max_drawdown, ratios
from backtests.runner import (
    CHUNK,
    Inputs,
    RunResult,
    RunSettings,
    decision_rows,
    fill_params,
    interventions,
    prepare,
    sizing_of,
)
from bot.data.bars import Bars
from bot.data.dataset import iso
from bot.errors import LiqbotError
from bot.execution import kernel as kn
from bot.jit import lean
from bot.mechanics import account as ac
from bot.mechanics.brackets import Brackets
from bot.risk import engine as en
from bot.risk.policy import RiskPolicy
from strategies.base import Strategy, targets_of

# per-symbol loop state (st[s, ...]): the kernel's close-phase state, then ours
PS_PEND = kn.N_K            # pending orders: main, hedge (base qty)
PS_WIN = kn.N_K + 2         # the fill model's window at the decision (3 values)
PS_MARK = kn.N_K + 5        # last mark close
PS_TARGET = kn.N_K + 6      # last target leverage (for the portfolio budget)
PS_LIQ_OWN = kn.N_K + 7     # liquidations of this symbol's slots in the current bar
PS_LIQ_SEEN = kn.N_K + 8    # other symbols' liquidations seen at this symbol's last check
PS_REF = kn.N_K + 9         # reference mark of the open phase
PS_LO = kn.N_K + 10         # the mark range a liquidation check runs over (low, high)
PS_HI = kn.N_K + 11
PS_FIRST = kn.N_K + 12      # 1: checked in the first pass of the liquidation rounds
N_PS = kn.N_K + 13
# counters (cnt[...])
C_TRADES, C_DEC = 0, 1
# per-symbol records: the engine's R_* columns, then these
R_SYM_FEES = eg.N_REC
R_SYM_FUNDING = eg.N_REC + 1
R_SYM_PNL = eg.N_REC + 2
R_HAS_BAR = eg.N_REC + 3
N_PREC = eg.N_REC + 4
# portfolio records (port[t, ...])
(PR_EQUITY, PR_WALLET, PR_GROSS, PR_LEVERAGE, PR_FEES, PR_FUNDING, PR_LIQUIDATIONS) = range(7)
N_PORT = 7
# trades and decisions: the engine's columns, then the symbol index
N_PTRD = eg.N_TRD + 1
N_PDCS = eg.N_DCS + 1


@njit(cache=True)
def _trade(trd: np.ndarray, cnt: np.ndarray, t: int, s: int, slot: int, qty: float,
           price: float, fee: float, slip: float, liq: float) -> None:
    """The engine's trade row plus the symbol index (column N_TRD)."""
    k = eg.record_trade(trd, cnt, C_TRADES, t, slot, qty, price, fee, slip, liq)
    if k >= 0:
        trd[k, eg.N_TRD] = s


@njit(cache=True)
def _liquidation_rounds(t: int, at_close: bool, has: np.ndarray, mark_low: np.ndarray,
                        mark_high: np.ndarray, acct: np.ndarray, pos: np.ndarray,
                        marks: np.ndarray, floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray,
                        cum: np.ndarray, fp: np.ndarray, st: np.ndarray, trd: np.ndarray,
                        cnt: np.ndarray, liq: np.ndarray) -> None:
    """Liquidation checks of every symbol's slots at bar t (`kernel.liquidation_rounds`:
    re-checked across symbols after each liquidation until nothing more is liquidated),
    recorded as trades; a liquidated main slot ends its entry (`kernel.end_entry`).

    Open range (`at_close` False): each symbol over its bar's mark range (a stale symbol at
    its last close), the others at their reference marks (this bar's open). The close
    instant (`at_close` True, PS_MARK holding the closes): every symbol at its close with
    the others at theirs, the one instant at which all marks are known together. The open
    range checks one symbol's extreme against the others' opens, so an account that two
    symbols' falls took under its maintenance margin together (each alone not past its
    price) stayed open until a later bar (hours, on a real two-symbol crash); at the
    close it is liquidated, symbol by symbol in symbol order (Binance does not publish
    which cross position it closes first), each liquidation re-checking the others.
    `liq` (2S, 4): scratch for the liquidations' rows."""
    n_sym = has.shape[0]
    for s in range(n_sym):
        if at_close:
            st[s, PS_REF] = st[s, PS_MARK]
        if has[s, t] != 0 and not at_close:
            st[s, PS_LO] = mark_low[s, t]
            st[s, PS_HI] = mark_high[s, t]
        else:
            st[s, PS_LO] = st[s, PS_MARK]
            st[s, PS_HI] = st[s, PS_MARK]
        st[s, PS_FIRST] = 1.0
    n = kn.liquidation_rounds(st[:, PS_FIRST], st[:, PS_LO], st[:, PS_HI], st[:, PS_REF], acct,
                              pos, marks, floor, cap, mmr, cum, fp,
                              st[:, PS_LIQ_OWN:PS_LIQ_SEEN + 1], liq)
    for k in range(n):
        slot = int(liq[k, 0])
        _trade(trd, cnt, t, slot // 2, slot, liq[k, 1], liq[k, 2], liq[k, 3], 0.0, 1.0)
        kn.end_entry(st[slot // 2], pos, slot)


@njit(cache=True)
def run_bars(t0: int, t1: int, ts: np.ndarray, has: np.ndarray, opn: np.ndarray,
             close: np.ndarray, mark_open: np.ndarray, mark_high: np.ndarray,
             mark_low: np.ndarray, mark_close: np.ndarray, funding: np.ndarray,
             window: np.ndarray, sig: np.ndarray, targets: np.ndarray, pol: np.ndarray,
             fp: np.ndarray, floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray,
             cum: np.ndarray, tier_cap: np.ndarray, max_lev: np.ndarray, acct: np.ndarray,
             pos: np.ndarray, st: np.ndarray, cnt: np.ndarray, rec: np.ndarray,
             port: np.ndarray, trd: np.ndarray, dcs: np.ndarray, marks: np.ndarray,
             pol_s: np.ndarray, view: np.ndarray, dec: np.ndarray, out: np.ndarray,
             liq: np.ndarray) -> None:
    """Grid bars [t0, t1) of S symbols (module docstring); every array is updated in place.

    Market arrays are (S, T) (window (S, T, 3), sig (S, T, N_SIG)); `has[s, t]` is 1 where
    symbol s has a bar. floor/cap/mmr/cum are per-slot bracket rows (2 per symbol),
    tier_cap/max_lev the symbols' tier caps and max leverages (S, W). Scratch: marks (2S),
    pol_s (N_POLICY), view, dec, out, liq (2S, 4). Allocates nothing."""
    n_sym = has.shape[0]
    hard = pol[en.P_MAX_LEV_HARD]
    for t in range(t0, t1):
        # --- open phase: funding and fills ----------------------------------------------
        for s in range(n_sym):
            if has[s, t] == 0:
                st[s, PS_REF] = st[s, PS_MARK]
                continue
            st[s, PS_REF] = mark_open[s, t]
            a = 2 * s
            for k in range(2):
                kn.settle_funding(acct, pos, a + k, mark_open[s, t], funding[s, t])
            if st[s, kn.K_BUST] == 0.0:
                for k in range(2):
                    dq = st[s, PS_PEND + k]
                    if dq != 0.0:
                        px, fee, slip = kn.fill_order(acct, pos, a + k, dq, opn[s, t],
                                                      st[s, PS_WIN], st[s, PS_WIN + 1],
                                                      st[s, PS_WIN + 2], fp)
                        if px > 0.0:
                            _trade(trd, cnt, t, s, a + k, dq, px, fee, slip, 0.0)
            st[s, PS_PEND] = 0.0
            st[s, PS_PEND + 1] = 0.0
        # --- open phase: liquidations, re-checked across symbols after each one ----------
        _liquidation_rounds(t, False, has, mark_low, mark_high, acct, pos, marks, floor, cap,
                            mmr, cum, fp, st, trd, cnt, liq)
        # --- close instant: every mark known at once ---------------------------------------
        for s in range(n_sym):
            if has[s, t] != 0:
                st[s, PS_MARK] = mark_close[s, t]
        if n_sym > 1:          # one symbol: its bar's range held the close already
            _liquidation_rounds(t, True, has, mark_low, mark_high, acct, pos, marks, floor,
                                cap, mmr, cum, fp, st, trd, cnt, liq)
        # --- close phase: marks, portfolio budget, decisions -------------------------------
        tot = 0.0
        for s in range(n_sym):
            if has[s, t] != 0:
                st[s, PS_TARGET] = targets[s, t]
            marks[2 * s] = st[s, PS_MARK]
            marks[2 * s + 1] = st[s, PS_MARK]
            tot += abs(st[s, PS_TARGET])
        for j in range(pol.shape[0]):
            pol_s[j] = pol[j]
        for s in range(n_sym):
            a = 2 * s
            if has[s, t] == 0:
                _stale_row(rec, s, t, acct, pos, marks, floor, cap, mmr, cum)
                continue
            pol_s[en.P_MAX_LEV_HARD] = kn.leverage_budget(hard, abs(st[s, PS_TARGET]), tot,
                                                          n_sym)
            kn.decide(acct, pos, a, a + 1, st[s], float(ts[t]), close[s, t], marks, sig[s, t],
                      targets[s, t], pol_s, fp, floor, cap, mmr, cum, tier_cap[s], max_lev[s],
                      view, dec, out)
            st[s, PS_PEND] = out[kn.O_ORDER_MAIN]
            st[s, PS_PEND + 1] = out[kn.O_ORDER_HEDGE]
            for k in range(3):
                st[s, PS_WIN + k] = window[s, t, k]
            eq = out[kn.O_EQUITY]
            r = rec[s, t]
            r[eg.R_EQUITY] = eq
            r[eg.R_WALLET] = acct[ac.A_WALLET]
            r[eg.R_QTY] = pos[a, ac.P_QTY]
            r[eg.R_HEDGE_QTY] = pos[a + 1, ac.P_QTY]
            r[eg.R_LEVERAGE] = ac.leverage(pos[a, ac.P_QTY], mark_close[s, t], eq)
            r[eg.R_TARGET_LEV] = targets[s, t]
            r[eg.R_ALLOWED_LEV] = out[kn.O_ALLOWED] / eq if eq > 0.0 else 0.0
            r[eg.R_STATE] = dec[en.D_STATE]
            r[eg.R_REASONS] = dec[en.D_REASONS]
            r[eg.R_LIQ_PRICE] = out[kn.O_LIQ_PRICE]
            r[eg.R_FEES] = acct[ac.A_FEES]
            r[eg.R_FUNDING] = acct[ac.A_FUNDING]
            r[eg.R_CLIPPED] = out[kn.O_CLIPPED]
            _own_columns(r, pos, a, marks)
            r[R_HAS_BAR] = 1.0
            if out[kn.O_CHANGED] > 0.0:
                k = int(cnt[C_DEC])
                if k < dcs.shape[0]:
                    dcs[k, 0] = t
                    dcs[k, 1] = out[kn.O_TARGET]
                    dcs[k, 2] = out[kn.O_ALLOWED]
                    for j in range(en.N_DECISION):
                        dcs[k, 3 + j] = dec[j]
                    dcs[k, eg.N_DCS] = s
                cnt[C_DEC] += 1.0
        # --- the portfolio's row -------------------------------------------------------------
        eq = ac.equity(acct, pos, marks)
        gross = 0.0
        main_n = 0.0
        for s in range(n_sym):
            main_n += abs(pos[2 * s, ac.P_QTY] * marks[2 * s])
            gross += abs(pos[2 * s, ac.P_QTY] * marks[2 * s]) + \
                abs(pos[2 * s + 1, ac.P_QTY] * marks[2 * s + 1])
        p = port[t]
        p[PR_EQUITY] = eq
        p[PR_WALLET] = acct[ac.A_WALLET]
        p[PR_GROSS] = gross
        p[PR_LEVERAGE] = ac.leverage(main_n, 1.0, eq)
        p[PR_FEES] = acct[ac.A_FEES]
        p[PR_FUNDING] = acct[ac.A_FUNDING]
        p[PR_LIQUIDATIONS] = acct[ac.A_LIQUIDATIONS]


@njit(cache=True)
def _own_columns(r: np.ndarray, pos: np.ndarray, a: int, marks: np.ndarray) -> None:
    """The symbol's own cumulative fees, funding and PnL (its two slots)."""
    fees = 0.0
    fund = 0.0
    pnl = 0.0
    for k in range(2):
        fees += pos[a + k, ac.P_FEES]
        fund += pos[a + k, ac.P_FUNDING]
        pnl += pos[a + k, ac.P_REALIZED] - pos[a + k, ac.P_FEES] - pos[a + k, ac.P_FUNDING]
        if pos[a + k, ac.P_QTY] != 0.0:
            pnl += ac.unrealized(pos, a + k, marks[a + k])
    r[R_SYM_FEES] = fees
    r[R_SYM_FUNDING] = fund
    r[R_SYM_PNL] = pnl


@njit(cache=True)
def _stale_row(rec: np.ndarray, s: int, t: int, acct: np.ndarray, pos: np.ndarray,
               marks: np.ndarray, floor: np.ndarray, cap: np.ndarray, mmr: np.ndarray,
               cum: np.ndarray) -> None:
    """The record of a symbol without a bar: its last decision carried, the account and
    its position marked at its last close."""
    r = rec[s, t]
    if t > 0:
        for j in range(rec.shape[2]):
            r[j] = rec[s, t - 1, j]
    a = 2 * s
    eq = ac.equity(acct, pos, marks)
    r[eg.R_EQUITY] = eq
    r[eg.R_WALLET] = acct[ac.A_WALLET]
    r[eg.R_QTY] = pos[a, ac.P_QTY]
    r[eg.R_HEDGE_QTY] = pos[a + 1, ac.P_QTY]
    r[eg.R_LEVERAGE] = ac.leverage(pos[a, ac.P_QTY], marks[a], eq)
    r[eg.R_LIQ_PRICE] = ac.liquidation_price(acct, pos, a, marks, floor, cap, mmr, cum)
    r[eg.R_FEES] = acct[ac.A_FEES]
    r[eg.R_FUNDING] = acct[ac.A_FUNDING]
    r[eg.R_CLIPPED] = 0.0
    _own_columns(r, pos, a, marks)
    r[R_HAS_BAR] = 0.0


_run_bars_lean = lean(run_bars)


# --- Python side: alignment, runs, metrics ------------------------------------------------
@dataclass
class PortfolioInputs:
    """Every symbol's causal inputs (`runner.prepare`) scattered onto one grid."""

    symbols: list[str]
    labels: list[str]              # where each symbol came from (file names, for messages)
    interval_ms: int
    ts: np.ndarray                 # (T,) grid open times, ms UTC
    has: np.ndarray                # (S, T) uint8: the symbol has a bar
    rows: np.ndarray               # (S, T) the symbol's own bar index, -1 when stale
    market: dict[str, np.ndarray]  # (S, T) arrays; window (S, T, 3)
    sig: np.ndarray                # (S, T, N_SIG)
    inputs: list[Inputs]
    brackets: list[Brackets]


def check_alignment(bars: Sequence[Bars], labels: Sequence[str]) -> None:
    """Raise LiqbotError naming the file if the datasets cannot share one grid: duplicate
    symbols, different bar intervals, open times off each other's grid, or spans that do
    not overlap."""
    if len(bars) < 1:
        raise LiqbotError("a portfolio needs at least one dataset")
    first = bars[0]
    seen: dict[str, str] = {}
    for b, lab in zip(bars, labels, strict=True):
        if len(b) == 0:
            raise LiqbotError(f"{lab}: no bars in the selected span")
        if b.symbol in seen:
            raise LiqbotError(f"{lab}: symbol {b.symbol} is already in the portfolio "
                              f"(from {seen[b.symbol]}); one dataset per symbol")
        seen[b.symbol] = lab
        if b.interval_ms != first.interval_ms:
            raise LiqbotError(f"{lab}: {b.interval_ms} ms bars, but {labels[0]} has "
                              f"{first.interval_ms} ms bars; a portfolio needs one interval")
        if int(b.ts[0] - first.ts[0]) % first.interval_ms != 0:
            raise LiqbotError(f"{lab}: bar open times are off the grid of {labels[0]} "
                              f"({iso(int(b.ts[0]))} vs {iso(int(first.ts[0]))} at "
                              f"{first.interval_ms} ms bars)")
    lo = max(b.start_ms for b in bars)
    hi = min(b.end_ms for b in bars)
    if lo >= hi:
        late = int(np.argmax([b.start_ms for b in bars]))
        early = int(np.argmin([b.end_ms for b in bars]))
        raise LiqbotError(f"{labels[late]} ({iso(bars[late].start_ms)} ..) does not overlap "
                          f"{labels[early]} (.. {iso(bars[early].end_ms)})")


def prepare_portfolio(bars: Sequence[Bars], brackets: Sequence[Brackets],
                      settings: RunSettings, labels: Sequence[str] | None = None
                      ) -> PortfolioInputs:
    """Signals per symbol (the same causal step kernel as a single backtest), then the
    market arrays scattered onto the union grid of open times."""
    labels = list(labels) if labels is not None else [b.symbol for b in bars]
    check_alignment(bars, labels)
    grid = np.unique(np.concatenate([b.ts for b in bars])).astype(np.int64)
    n_s, n_t = len(bars), len(grid)
    rows = np.full((n_s, n_t), -1, dtype=np.int64)
    has = np.zeros((n_s, n_t), dtype=np.uint8)
    inputs: list[Inputs] = []
    keys = ("open", "close", "mark_open", "mark_high", "mark_low", "mark_close", "funding")
    market = {k: np.full((n_s, n_t), np.nan) for k in keys}
    market["window"] = np.zeros((n_s, n_t, 3))
    sig = np.full((n_s, n_t, en.N_SIG), np.nan)
    for s, (b, brk) in enumerate(zip(bars, brackets, strict=True)):
        inp = prepare(b, brk, settings)
        idx = np.searchsorted(grid, b.ts)
        rows[s, idx] = np.arange(len(b))
        has[s, idx] = 1
        for k in keys:
            market[k][s, idx] = inp.market[k]
        market["window"][s, idx] = inp.market["window"]
        sig[s, idx] = inp.sig
        # on the grid now: only the bars and signals stay (the strategy's targets need them)
        inputs.append(Inputs(inp.bars, {}, np.zeros((0, en.N_SIG)), inp.signals))
        del inp
    return PortfolioInputs([b.symbol for b in bars], labels, bars[0].interval_ms, grid, has,
                           rows, market, sig, inputs, list(brackets))


@dataclass
class PortfolioResult:
    name: str
    symbols: list[str]
    records: np.ndarray            # (S, T, N_PREC)
    port: np.ndarray               # (T, N_PORT)
    trades: np.ndarray             # (k, N_PTRD)
    decisions: np.ndarray          # (m, N_PDCS)
    metrics: dict[str, Any]        # {"portfolio": {...}, "symbols": {SYM: {...}}}
    acct: np.ndarray
    pos: np.ndarray


def _padded(rows: list[np.ndarray]) -> np.ndarray:
    """Per-symbol tier rows padded to one width with each row's last value (a repeated
    last tier adds nothing to `max_notional_for_equity`)."""
    width = max(len(r) for r in rows)
    out = np.zeros((len(rows), width))
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
        out[i, len(r):] = r[-1]
    return out


def run_portfolio(pin: PortfolioInputs, strategy: Strategy, policy: RiskPolicy,
                  settings: RunSettings, name: str,
                  progress: Callable[[int], None] | None = None,
                  start: int = 0) -> PortfolioResult:
    """One portfolio run of `strategy` on every symbol of `pin` with one account. With
    `start` > 0 the account opens at grid bar `start` (as `runner.run`): the bars before it
    warm the signals and the strategy only, and the figures read bars from `start` on."""
    n_s, n_t = pin.has.shape
    targets = np.zeros((n_s, n_t))
    for s, inp in enumerate(pin.inputs):
        targets[s, pin.rows[s] >= 0] = targets_of(strategy, inp.bars, inp.signals)
    return run_targets(pin, targets, policy.to_array(),
                       fill_params(settings, sizing_of(strategy)), settings, name, progress,
                       start)


def run_targets(pin: PortfolioInputs, targets: np.ndarray, pol: np.ndarray, fp: np.ndarray,
                settings: RunSettings, name: str,
                progress: Callable[[int], None] | None = None,
                start: int = 0) -> PortfolioResult:
    """The loop over given target leverages (S, T), policy array and fill parameters, the
    account opening at grid bar `start` (`run_portfolio`)."""
    n_s, n_t = pin.has.shape
    if not 0 <= start < max(n_t, 1):
        raise ValueError(f"start {start} outside the {n_t} bars")
    targets = np.ascontiguousarray(targets, dtype=np.float64)
    acct, pos = ac.new_account(settings.wallet, 2 * n_s, leverage=125.0)
    st = np.zeros((n_s, N_PS))
    for s in range(n_s):
        st[s, :kn.N_K] = kn.new_state(settings.wallet)
    cnt = np.zeros(2)
    rec = np.zeros((n_s, n_t, N_PREC))
    port = np.zeros((n_t, N_PORT))
    port[:start, PR_EQUITY] = settings.wallet
    port[:start, PR_WALLET] = settings.wallet
    # trades and decisions grow between chunks, so they never overflow inside one: a chunk
    # adds at most 2 fills + 2 liquidations and one decision per symbol and bar
    per_chunk = min(CHUNK, n_t) * n_s
    trd = np.zeros((4 * per_chunk + 16, N_PTRD))
    dcs = np.zeros((per_chunk + 16, N_PDCS))
    floor, cap, mmr, cum, _ = ac.stack_brackets([b for b in pin.brackets for _ in range(2)])
    tier_cap = _padded([b.cap for b in pin.brackets])
    max_lev = _padded([b.max_leverage for b in pin.brackets])
    m = pin.market
    scratch = (np.zeros(2 * n_s), np.zeros(en.N_POLICY), np.zeros(en.N_ACCT_VIEW),
               np.zeros(en.N_DECISION), np.zeros(kn.N_DECIDE), np.zeros((2 * n_s, 4)))
    for t0 in range(start, n_t, CHUNK):
        t1 = min(n_t, t0 + CHUNK)
        trd = _room(trd, int(cnt[C_TRADES]), 4 * (t1 - t0) * n_s)
        dcs = _room(dcs, int(cnt[C_DEC]), (t1 - t0) * n_s)
        _run_bars_lean(t0, t1, pin.ts, pin.has, m["open"], m["close"], m["mark_open"],
                       m["mark_high"], m["mark_low"], m["mark_close"], m["funding"],
                       m["window"], pin.sig, targets, pol, fp, floor, cap, mmr, cum, tier_cap,
                       max_lev, acct, pos, st, cnt, rec, port, trd, dcs, *scratch)
        if progress:
            progress(t1 - t0)
    trades = trd[: int(min(cnt[C_TRADES], len(trd)))]
    decisions = dcs[: int(min(cnt[C_DEC], len(dcs)))]
    res = PortfolioResult(name, list(pin.symbols), rec, port, trades, decisions, {}, acct, pos)
    res.metrics = portfolio_metrics(res, pin, settings, st, start)
    return res


def _room(a: np.ndarray, used: int, need: int) -> np.ndarray:
    """`a` with at least `need` free rows after the first `used` (doubled when short)."""
    if len(a) - used >= need:
        return a
    out = np.zeros((max(2 * len(a), used + need), a.shape[1]))
    out[:used] = a[:used]
    return out


def _liquidations(trades: np.ndarray, pin: PortfolioInputs, s: int | None) -> list[dict]:
    out = []
    for tr in trades:
        if tr[6] != 1.0 or (s is not None and int(tr[7]) != s):
            continue
        k = int(tr[7])
        out.append({"symbol": pin.symbols[k], "ts": iso(int(pin.ts[int(tr[0])])),
                    "bar": int(tr[0]), "slot": "main" if int(tr[1]) % 2 == 0 else "hedge",
                    "qty": float(tr[2]), "price": float(tr[3])})
    return out


def portfolio_metrics(res: PortfolioResult, pin: PortfolioInputs, settings: RunSettings,
                      st: np.ndarray, start: int = 0) -> dict[str, Any]:
    """Portfolio figures from the account, per-symbol figures from each symbol's slots
    (its return and drawdown are those of its own PnL on the initial wallet: its
    contribution; they do not add up to the portfolio's drawdown); bars from `start` on."""
    w0 = settings.wallet
    bars_per_year = MINUTES_PER_YEAR * 60_000 / pin.interval_ms
    live_port = res.port[start:]
    eq = np.r_[w0, live_port[:, PR_EQUITY]]
    sharpe, sortino = ratios(eq, bars_per_year)
    trades = res.trades
    liq = trades[:, 6] == 1.0 if len(trades) else np.zeros(0, dtype=bool)
    port = {
        "symbols": list(pin.symbols),
        "initial_equity": w0,
        "final_equity": float(eq[-1]),
        "total_return": float(eq[-1] / w0 - 1.0),
        "max_drawdown": max_drawdown(eq),
        "sharpe": sharpe,
        "sortino": sortino,
        "liquidations": int(liq.sum()),
        "liquidation_events": _liquidations(trades, pin, None),
        "fees": float(res.acct[ac.A_FEES]),
        "liquidation_fees": float(trades[liq, 4].sum()) if len(trades) else 0.0,
        "funding": float(res.acct[ac.A_FUNDING]),
        "slippage": float(trades[:, 5].sum()) if len(trades) else 0.0,
        "n_trades": int((~liq).sum()),
        "max_leverage_used": float(live_port[:, PR_LEVERAGE].max()) if len(live_port) else 0.0,
        "n_risk_actions": int(sum(interventions(res.records[s, start:])
                                  for s in range(len(st)))),
        "n_decision_changes": int(len(res.decisions)),
        "bust": bool(st[:, kn.K_BUST].max() > 0.0) if len(st) else False,
    }
    symbols = {}
    for s, sym in enumerate(pin.symbols):
        r = res.records[s, start:]
        curve = np.r_[w0, w0 + r[:, R_SYM_PNL]]
        mine = trades[trades[:, 7] == s] if len(trades) else trades
        lq = mine[:, 6] == 1.0 if len(mine) else np.zeros(0, dtype=bool)
        live = r[:, R_HAS_BAR] > 0.0
        symbols[sym] = {
            "source": pin.labels[s],
            "bars": int(live.sum()),
            "pnl": float(r[-1, R_SYM_PNL]) if len(r) else 0.0,
            "total_return": float(r[-1, R_SYM_PNL] / w0) if len(r) else 0.0,
            "max_drawdown": max_drawdown(curve),
            "liquidations": int(lq.sum()),
            "liquidation_events": _liquidations(trades, pin, s),
            "fees": float(r[-1, R_SYM_FEES]) if len(r) else 0.0,
            "liquidation_fees": float(mine[lq, 4].sum()) if len(mine) else 0.0,
            "funding": float(r[-1, R_SYM_FUNDING]) if len(r) else 0.0,
            "slippage": float(mine[:, 5].sum()) if len(mine) else 0.0,
            "n_trades": int((~lq).sum()),
            "time_in_market": float((r[live, eg.R_QTY] != 0.0).mean()) if live.any() else 0.0,
            "max_leverage_used": float(np.abs(r[:, eg.R_LEVERAGE]).max()) if len(r) else 0.0,
            "n_risk_actions": interventions(r),
        }
    return {"portfolio": port, "symbols": symbols}


def portfolio_decisions(res: PortfolioResult, pin: PortfolioInputs) -> list[dict[str, Any]]:
    """The decision timeline of every symbol (`runner.decision_rows` per symbol on the
    grid), by bar, with the symbol."""
    rows: list[dict[str, Any]] = []
    m = pin.market
    for s, sym in enumerate(pin.symbols):
        mine = res.decisions[res.decisions[:, eg.N_DCS] == s][:, :eg.N_DCS]
        grid = Bars(sym, pin.interval_ms, {"ts": pin.ts, "open": m["open"][s],
                                           "high": m["open"][s], "low": m["open"][s],
                                           "close": m["close"][s],
                                           "volume": np.zeros(len(pin.ts))})
        one = RunResult(res.name, res.records[s, :, :eg.N_REC], res.trades[:0, :eg.N_TRD],
                        mine, {}, np.zeros(0))
        rows += [{"symbol": sym, **row} for row in decision_rows(one, grid)]
    rows.sort(key=lambda r: int(r["bar"]))
    return rows
