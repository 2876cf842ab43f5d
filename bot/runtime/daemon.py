"""The daemon loop: feed -> signals -> strategy -> risk -> order manager -> broker.

Per closed bar and symbol (the same order as a backtest bar, `bot.execution.kernel`):
1. the broker's open phase: orders decided at the previous close fill at this bar's open,
   funding settles, mark-price liquidation; fills and payments are staged in the store;
2. the incremental signal step kernel runs once (`bot.signals.stream`), the strategy's
   streaming form gives the target for this bar;
3. `kernel.decide` (the compiled risk engine inside) decides; the decision is staged;
4. an order becomes an intent with a deterministic client id (run id + sequence), and the
   store commits the decision, the intent, the watermark and a checkpoint of every state
   (account, kernel, signal and strategy streams, pending orders) in ONE transaction
   BEFORE the order is handed to the broker. Bars without orders are committed in batches.

Crash-only: a restart loads the run's checkpoint (the state after its watermark bar),
restores the broker, streams and kernel state, and continues after the watermark. Bars
processed after the last commit are processed again deterministically; every row has a
natural key, so nothing is duplicated, and intent ids repeat, so no order is sent twice.

Scheduled jobs on a replay's clock (equity snapshot, daily summary, settlement check; the
stale watchdog runs on live feeds only) due at time T run once every symbol's bar opening
before T has been processed:
when the feed moves on to a later open time, and at its end. They see every symbol at the
same close (they ran between two symbols' bars of one minute before 2026-12-06). The daily
summary's figures are the day's (`DayTally`), kept in the checkpoint, as the run's counters
(`run_counts`): a resumed run reports what an uninterrupted one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.config import RunConfig
from bot.errors import LiqbotError, exc_text
from bot.execution import kernel as kn
from bot.execution.broker import Fill, Funding, Order, PaperBroker, from_bytes, to_bytes
from bot.mechanics import account as ac
from bot.mechanics.brackets import Brackets
from bot.risk import engine as en
from bot.risk.reasons import R_KILL_SWITCH, render
from bot.runtime import scheduler as sc
from bot.runtime.feed import BarEvent, Feed
from bot.signals import stream as ss
from bot.store import Store
from bot.store.store import now_ms
from bot.store.tables import client_order_id
from bot.text import count
from strategies.base import Strategy

log = logging.getLogger("liqbot.daemon")
DAY_MS = 86_400_000


COMMAND_POLL_S = 0.25              # kill-switch poll (wall clock): obeyed within a second
#: On the wall clock (exchange feed) the daily summary runs this long after midnight: the
#: 23:59 bar closes at 00:00 and arrives after it (the stream's final candle, or a REST
#: backfill after the feed's grace of seconds); at 00:00 sharp the summary missed it.
DAILY_SUMMARY_DELAY_S = 60
#: `intents.reason` of an order a replayed symbol's data end left without the open to fill at
DATA_ENDED_REASON = "replayed data ended at {end}: no next open to fill at"


@dataclass
class SymbolState:
    """Everything the loop keeps for one symbol."""

    name: str
    index: int
    brackets: Brackets
    st: np.ndarray
    stream: ss.SignalStream | None = None
    strat: Any = None
    last_ts: int = -1
    last_sig: np.ndarray = field(default_factory=lambda: np.full(en.N_SIG, np.nan))
    last_window: tuple[float, float, float] = (0.0, 0.0, 0.0)
    last_close: float = float("nan")
    bars: int = 0
    atr: float = float("nan")
    last_state: int = -1              # risk state of the last decision (-1: none yet)
    last_reasons: int = 0             # reason bits of the last decision
    fail_streak: int = 0              # bars in a row on which the strategy failed
    fail_closed: bool = False         # this process has reported the streak's closing
    skip_ts: int = -1                 # open time of the last malformed bar skipped (counted)


def _day_end(ms: int) -> int:
    """The UTC midnight that ends the day holding instant `ms` (a bar closing exactly at
    00:00 belongs to the day that ends then, whose summary runs at that close)."""
    return -(-int(ms) // DAY_MS) * DAY_MS


@dataclass
class DayTally:
    """What the daemon did in one UTC day, by the bars' closes: the daily summary's
    figures. Bars per symbol; orders (intents), fills and liquidations."""

    bars: dict[str, int] = field(default_factory=dict)
    orders: int = 0
    fills: int = 0
    liquidations: int = 0


class Daemon:
    """One run of the trading loop over a feed, a paper broker and a store."""

    def __init__(self, *, run_id: str, feed: Feed, store: Store, strategy: Strategy,
                 policy: np.ndarray, fp: np.ndarray, brackets: dict[str, Brackets],
                 wallet: float, settings: RunConfig | None = None,
                 clock: Callable[[], float] = time.monotonic, broker: Any = None) -> None:
        self.run_id = run_id
        self.feed = feed
        self.store = store
        self.strategy = strategy
        self.pol = policy
        self.fp = fp
        self.settings = settings or RunConfig()
        self.clock = clock
        self.symbols = list(feed.symbols)
        self.state = {s: SymbolState(s, i, brackets[s], kn.new_state(wallet))
                      for i, s in enumerate(self.symbols)}
        # paper by default; a LiveBroker (bot.execution.live) has the same interface plus
        # the async start / sync / flush / close the loop awaits around each bar
        self.broker = broker if broker is not None else \
            PaperBroker(self.symbols, [brackets[s] for s in self.symbols], wallet, fp)
        self.live = hasattr(self.broker, "flush")
        self.restored = False
        self.seq = 0                      # intent sequence (deterministic client ids)
        self.halted = False               # operator kill switch
        self.flatten = False
        self.stopping = False
        self._task: asyncio.Task[Any] | None = None   # `run`'s task, while it waits for a bar
        self._wall_jobs = False           # equity/daily/settlement jobs on the wall clock
        self._idle = False                # waiting for the next bar: no bar or send in flight
        self._dirty_bars = 0
        self._last_commit = clock()
        self._view = np.zeros(en.N_ACCT_VIEW)
        self._pol = policy.copy()         # `policy` with the deciding symbol's leverage budget
        self._dec = np.zeros(en.N_DECISION)
        self._out = np.zeros(kn.N_DECIDE)
        self.latency_ns: list[int] = []   # bar close -> intent ready (before the write)
        self.write_ns: list[int] = []     # the durable write of an intent
        self.bars_processed = 0
        self.skipped = 0
        self._filled_since_commit: set[str] = set()
        # operations hooks (bot.runtime.alerts, bot.runtime.metrics): called in the loop's
        # thread as listener(kind, data) on "decision", "state", "fill", "liquidation",
        # "reject", "stale", "data_ended", "data_gap", "strategy_error", "daily_summary";
        # they must not block (they enqueue).
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        # per RUN (in the checkpoint, as bars_processed, seq and skipped): a resumed run
        # reports what an uninterrupted one does (`run_counts`; metrics: `process_count`)
        self.counters = {"fills": 0, "liquidations": 0, "rejects": 0, "stale": 0,
                         "strategy_errors": 0}
        # per-day figures of the daily summary, by the UTC midnight ending the day: in the
        # checkpoint, so a resumed run reports what an uninterrupted one does
        self.days: dict[int, DayTally] = {}
        self.ended: set[str] = set()      # replayed symbols whose data has ended
        # `run_counts` when this process took the run over (`restore`): metrics count from it
        self._at_start: dict[str, int] = {}
        self._job_ms: int | None = None   # the simulated time the replay's jobs run at
        # strategy errors whose traceback was logged (type, file, line): once each
        self._traced: set[tuple[str, str, int]] = set()

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        for listener in self.listeners:
            try:
                listener(kind, data)
            except Exception:                 # a listener must never stop the trading loop
                log.exception("listener failed on %s", kind)

    # ------------------------------------------------------------------ checkpoint
    def checkpoint(self) -> bytes:
        """Every state of the run as one blob (np.savez). `bot.runtime.status.run_counts`
        reads its `meta:SYMBOL` bars and `tally` counters without loading the daemon."""
        snap = self.broker.snapshot()
        arrays: dict[str, Any] = {
            "acct": snap["acct"], "pos": snap["pos"], "marks": snap["marks"],
            "pending": np.array([json.dumps(snap["pending"])]),
            "scalars": np.array([self.seq, int(self.halted), int(self.flatten)], dtype=np.int64),
        }
        if "extra" in snap:                   # the live broker's ledger and order ids
            arrays["broker"] = np.array([json.dumps(snap["extra"])])
        for k in ("bar_ts", "bar_range"):     # the paper broker's last bar per symbol
            if k in snap:
                arrays[k] = snap[k]
        arrays["tally"] = np.array([json.dumps({
            "days": {str(d): vars(t) for d, t in self.days.items()},
            "ended": sorted(self.ended),
            "counters": self.counters, "skipped": self.skipped})])
        for s, x in self.state.items():
            arrays[f"st:{s}"] = x.st
            arrays[f"meta:{s}"] = np.array([x.last_ts, x.bars, x.fail_streak, x.skip_ts],
                                           dtype=np.int64)
            arrays[f"sig:{s}"] = x.last_sig
            arrays[f"win:{s}"] = np.array(x.last_window)
            arrays[f"close:{s}"] = np.array([x.last_close])
            if x.stream is not None:
                arrays[f"stream:{s}"] = np.frombuffer(x.stream.snapshot(), dtype=np.uint8)
            if x.strat is not None:
                arrays[f"strat:{s}"] = np.frombuffer(x.strat.state(), dtype=np.uint8)
        return to_bytes(arrays)

    def restore(self, blob: bytes) -> None:
        a = from_bytes(blob)
        self.broker.restore({"acct": a["acct"], "pos": a["pos"], "marks": a["marks"],
                             "pending": json.loads(str(a["pending"][0])),
                             "extra": json.loads(str(a["broker"][0])) if "broker" in a
                             else None,
                             "bar_ts": a.get("bar_ts"), "bar_range": a.get("bar_range")})
        self.restored = True
        self.seq, halted, flatten = (int(v) for v in a["scalars"])
        self.halted, self.flatten = bool(halted), bool(flatten)
        if "tally" in a:                      # older checkpoints: the day starts from zero
            tally = json.loads(str(a["tally"][0]))
            self.days = {int(d): DayTally(**t) for d, t in tally["days"].items()}
            self.ended = set(tally["ended"])
            # the run's counters (older checkpoints: from zero, as before)
            self.counters.update({k: int(v) for k, v in tally.get("counters", {}).items()
                                  if k in self.counters})
            self.skipped = int(tally.get("skipped", 0))
        for s, x in self.state.items():
            if f"st:{s}" not in a:
                continue
            x.st[:] = a[f"st:{s}"]
            meta = [int(v) for v in a[f"meta:{s}"]]
            x.last_ts, x.bars = meta[0], meta[1]
            x.fail_streak = meta[2] if len(meta) > 2 else 0     # older checkpoints: none
            x.skip_ts = meta[3] if len(meta) > 3 else -1
            x.last_sig = a[f"sig:{s}"].copy()
            x.last_window = tuple(float(v) for v in a[f"win:{s}"])  # type: ignore[assignment]
            x.last_close = float(a[f"close:{s}"][0])
            if f"stream:{s}" in a:          # tiers the exchange changed between two lives
                x.stream = ss.SignalStream.restore(
                    a[f"stream:{s}"].tobytes(), x.brackets,
                    lambda what, s=s, ts=x.last_ts: self._tiers_changed(s, ts, what))
            if f"strat:{s}" in a:
                x.strat = self.strategy.stream_from(a[f"strat:{s}"].tobytes(), s,
                                                    self.feed.interval_ms)
        # every processed bar is counted in its symbol's `bars` (also in older checkpoints)
        self.bars_processed = sum(x.bars for x in self.state.values())
        self._at_start = self.run_counts()

    def run_counts(self) -> dict[str, int]:
        """The run's figures so far (all its processes: restored with the checkpoint):
        bars processed (in all and by `bars:SYMBOL`), orders (intents), malformed bars
        skipped and `counters` (fills, liquidations, rejects, stale, strategy_errors)."""
        return {"bars": self.bars_processed, "orders": self.seq, "skipped": self.skipped,
                **self.counters, **{f"bars:{s}": x.bars for s, x in self.state.items()}}

    def process_count(self, name: str) -> int:
        """A `run_counts` figure counted by this process only (since its start or restore):
        the Prometheus counters (`bot.runtime.metrics`), which a restart resets to 0 as
        Prometheus expects of a counter (a restored total that a kill -9 set back by the
        bars after the last commit would read as a reset, and count the run twice)."""
        return self.run_counts()[name] - self._at_start.get(name, 0)

    def _tiers_changed(self, s: str, ts: int, what: list[str]) -> None:
        """The run resumes (its halts, latches and positions kept) on brackets that differ
        from its checkpoint's: logged and recorded, since the map's stored levels were
        placed with the old ones."""
        named = [w if w != "max_leverage" else "max_leverage: live.leverage or the "
                 "exchange's caps changed, and with them the position limit" for w in what]
        msg = (f"{s}: leverage brackets differ from the checkpoint's ({'; '.join(named)}): "
               "resuming on the new ones; liquidation levels stored so far used the old")
        log.warning(msg)
        self.store.stage("events", {"run_id": self.run_id, "event_key": f"tiers-{s}-{ts}",
                                    "ts": ts, "kind": "brackets_changed", "message": msg,
                                    "data": {"symbol": s, "changed": what}})

    # ------------------------------------------------------------------ the hot path
    def on_bar(self, ev: BarEvent) -> None:
        """Process one closed bar (module docstring). Malformed bars are logged, skipped."""
        x_state = self.state.get(ev.symbol)
        if x_state is None:
            self._skip(ev, f"unknown symbol {ev.symbol!r}")
            return
        try:
            x = ss.bar_row(ev.bar)
        except (LiqbotError, TypeError, ValueError, KeyError) as exc:
            self._skip(ev, f"unreadable bar ({str(exc)[:200]})")
            return
        problem = _bar_problem(x, x_state.last_ts, self.feed.interval_ms)
        if problem == "old":
            return                          # already processed (a replayed or duplicate bar)
        if problem:
            ts = x[ss.X_TS]
            if np.isfinite(ts) and int(ts) <= x_state.skip_ts:
                return                      # skipped and counted before a restart: the feed
            if np.isfinite(ts):             # resumed below it (another symbol's bar came
                x_state.skip_ts = int(ts)   # later and was committed)
            self._skip(ev, problem)
            return
        t0 = time.perf_counter_ns()
        ts = int(x[ss.X_TS])
        sym = x_state
        if sym.last_ts >= 0 and ts > sym.last_ts + self.feed.interval_ms and self.replay:
            self._note_gap(sym, ts)
        if sym.stream is None:
            sym.stream = ss.SignalStream(sym.brackets, self.feed.interval_ms, float(x[ss.X_CLOSE]))
        if sym.strat is None:
            sym.strat = self.strategy.stream(sym.name, self.feed.interval_ms)
        # 1. the venue's open phase
        sent = [o for o in self.broker.pending() if o.symbol == sym.name]
        fills, payments = self.broker.on_bar_open(
            sym.name, ts, float(x[ss.X_OPEN]), float(x[ss.X_MARK_OPEN]),
            float(x[ss.X_MARK_HIGH]), float(x[ss.X_MARK_LOW]), float(x[ss.X_FUNDING]))
        for f in fills:
            self._record_fill(f)
        filled = {f.client_id for f in fills}
        still = {o.client_id for o in self.broker.pending()}     # live: fill not seen yet
        why = self.broker.rejections()
        for o in sent:
            if o.client_id not in filled and o.client_id not in still:   # the venue refused it
                self.store.stage_intent_update(o.client_id, "rejected", ts,
                                               why.get(o.client_id))
                self._filled_since_commit.add(o.client_id)     # resolved, not yet committed
                self.counters["rejects"] += 1
                log.warning("order %s %s rejected at the open of %s%s", o.client_id, o.symbol,
                            _iso(ts), f": {why[o.client_id]}" if o.client_id in why else "")
                self._emit("reject", {"symbol": o.symbol, "client_id": o.client_id,
                                      "qty": o.qty, "ts": ts})
        if payments:
            self._record_funding(sym.name, ts, payments)
        # 2. signals and strategy
        out = sym.stream.step(x)
        prev = float(sym.st[kn.K_PREV_TARGET])
        held = prev if np.isfinite(prev) else 0.0
        err: Exception | None = None
        try:
            target = float(sym.strat.update(x, out))
        except Exception as exc:              # noqa: BLE001 - a strategy's error: hold, record
            err = exc
        else:
            if not np.isfinite(target):
                err = ValueError(f"non-finite target {target!r}")
        if err is not None:
            target = self._strategy_failed(sym, ts, err, held)
        elif sym.fail_streak:
            log.warning("strategy %s recovered at %s %s after %d failing bars",
                        self.strategy.name, sym.name, _iso(ts), sym.fail_streak)
            sym.fail_streak = 0
            sym.fail_closed = False
        sig = out[ss.O_SIG:ss.O_SIG + en.N_SIG]
        sym.last_sig = sig.copy()
        sym.last_window = (float(out[ss.O_FILL + ss.F_VOL_W]), float(out[ss.O_FILL + ss.F_SIG_W]),
                           float(out[ss.O_FILL + ss.F_LIQ_W]))
        sym.atr = float(sig[en.S_ATR])
        sym.last_ts = ts
        sym.last_close = float(x[ss.X_CLOSE])
        sym.bars += 1
        self.broker.set_mark(sym.name, float(x[ss.X_MARK_CLOSE]))
        for f in self.broker.at_close(sym.name, ts):    # cross: every symbol at its close
            self._record_fill(f)
        # 3. decision and orders
        day = self._day(ts + self.feed.interval_ms)
        day.bars[sym.name] = day.bars.get(sym.name, 0) + 1
        self._decide(sym, ts, float(x[ss.X_CLOSE]), sig, target, t0)
        self.bars_processed += 1

    def _decide(self, sym: SymbolState, ts: int, close: float, sig: np.ndarray, target: float,
                t0: int) -> None:
        main, hedge = 2 * sym.index, 2 * sym.index + 1
        b = sym.brackets
        # the account's hard leverage cap, split into budgets as the portfolio backtest
        # splits it; the other symbols count with their last target (this bar's, if their
        # bar came first; none yet: 0). With one symbol the budget is the cap itself.
        total = abs(target) + sum(abs(float(x.st[kn.K_PREV_TARGET])) for x in self.state.values()
                                  if x is not sym and np.isfinite(x.st[kn.K_PREV_TARGET]))
        self._pol[en.P_MAX_LEV_HARD] = kn.leverage_budget(
            float(self.pol[en.P_MAX_LEV_HARD]), abs(target), total, len(self.symbols))
        kn.decide(self.broker.acct, self.broker.pos, main, hedge, sym.st, float(ts), close,
                  self.broker.marks, sig, target, self._pol, self.fp, self.broker.floor,
                  self.broker.cap, self.broker.mmr, self.broker.cum, b.cap, b.max_leverage,
                  self._view, self._dec, self._out)
        dec, out = self._dec, self._out
        q_main, q_hedge = float(out[kn.O_ORDER_MAIN]), float(out[kn.O_ORDER_HEDGE])
        if self.halted:                      # the operator's kill switch overrides: nothing
            dec[en.D_STATE] = en.HALTED      # grows (HALTED is reduce-only below), the risk
            dec[en.D_REASONS] = int(dec[en.D_REASONS]) | R_KILL_SWITCH   # engine's cuts go out
            held_main = float(self.broker.pos[main, ac.P_QTY])
            held_hedge = float(self.broker.pos[hedge, ac.P_QTY])
            q_main = -held_main if self.flatten else _reducing_part(q_main, held_main)
            q_hedge = -held_hedge if self.flatten else _reducing_part(q_hedge, held_hedge)
        # REDUCING / HALTED never grow the strategy's position (a hedge, which lowers the net
        # exposure, may open while REDUCING; HALTED closes it too)
        if dec[en.D_STATE] != en.ACTIVE:
            q_main = _reduce_only(q_main, float(self.broker.pos[main, ac.P_QTY]))
        if dec[en.D_STATE] == en.HALTED:
            q_hedge = _reduce_only(q_hedge, float(self.broker.pos[hedge, ac.P_QTY]))
        reasons = int(dec[en.D_REASONS])
        state, prev_state, prev_reasons = int(dec[en.D_STATE]), sym.last_state, sym.last_reasons
        sym.last_state, sym.last_reasons = state, reasons
        # a change is the kernel's (its rules) or the operator's: the kill switch overrides
        # the state after the kernel, so its halt and its release are compared here (the
        # first bar of a process counts as a change while halted: a resumed halt is said)
        changed = out[kn.O_CHANGED] > 0.0 or (
            (state, reasons) != (prev_state, prev_reasons) if prev_state >= 0 else self.halted)
        side = float(np.sign(self.broker.pos[main, ac.P_QTY]) or np.sign(out[kn.O_TARGET]) or 1)
        text = render(dec, side) if changed else ""
        if changed and self.halted and self.flatten:   # render names the switch
            text += " (flatten)"
        self.store.stage("decisions", {
            "run_id": self.run_id, "symbol": sym.name, "bar_ts": ts, "state": int(dec[en.D_STATE]),
            "reasons": reasons, "text": text, "target_notional": float(out[kn.O_TARGET]),
            "allowed_notional": float(out[kn.O_ALLOWED]),
            "numbers": {"equity": float(out[kn.O_EQUITY]), "liq_price": _num(out[kn.O_LIQ_PRICE]),
                        "mark": _num(sig[en.S_MARK]), "atr": _num(sig[en.S_ATR]),
                        "crowd_long": _num(sig[en.S_CROWD_LONG]),
                        "crowd_short": _num(sig[en.S_CROWD_SHORT]),
                        "cluster_below": _num(sig[en.S_CLUSTER_BELOW]),
                        "cluster_above": _num(sig[en.S_CLUSTER_ABOVE]),
                        "cascade": _num(sig[en.S_CASCADE]),
                        "cascade_run_atr": _num(sig[en.S_CASCADE_RUN]),
                        "drawdown": _num(dec[en.D_DRAWDOWN]), "clipped": int(out[kn.O_CLIPPED]),
                        "order": q_main, "hedge_order": q_hedge}})
        if self.listeners:
            info = {"symbol": sym.name, "ts": ts, "state": state, "prev_state": prev_state,
                    "reasons": reasons, "text": text, "mark": float(sig[en.S_MARK]),
                    "atr": float(sig[en.S_ATR]), "liq_price": float(out[kn.O_LIQ_PRICE]),
                    "qty": float(self.broker.pos[main, ac.P_QTY]),
                    "equity": float(out[kn.O_EQUITY])}
            self._emit("decision", info)
            if state != prev_state and (prev_state >= 0 or state != en.ACTIVE):
                self._emit("state", info)
        if changed:
            log.info("%s %s decision: %s", sym.name, _iso(ts), text,
                     extra={"symbol": sym.name, "bar_ts": ts, "reasons": reasons})
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s decision: %s", sym.name, _iso(ts), render(dec, side),
                      extra={"symbol": sym.name, "bar_ts": ts, "reasons": reasons})

        orders = []
        for slot, q in ((main, q_main), (hedge, q_hedge)):
            if q != 0.0:
                held = float(self.broker.pos[slot, ac.P_QTY])
                reduce_only = held != 0.0 and q * held < 0.0 and abs(q) <= abs(held) + 1e-12
                cid = client_order_id(self.run_id, self.seq)
                self.seq += 1
                self._day(ts + self.feed.interval_ms).orders += 1
                self.store.stage("intents", {
                    "client_id": cid, "run_id": self.run_id, "symbol": sym.name, "bar_ts": ts,
                    "slot": slot, "qty": q, "reduce_only": reduce_only, "status": "sent",
                    "created_ms": ts + self.feed.interval_ms,
                    "updated_ms": ts + self.feed.interval_ms})
                orders.append(Order(cid, sym.name, slot, q, reduce_only, sym.last_window))
        self._dirty_bars += 1
        if orders:
            if sym.bars > 1:                 # the first bar of a symbol loads the kernels
                self.latency_ns.append(time.perf_counter_ns() - t0)
            for o in orders:                 # pending in the checkpoint: it leaves with it
                self.broker.submit(o)
            w0 = time.perf_counter_ns()
            self.commit()
            self.write_ns.append(time.perf_counter_ns() - w0)
            for o in orders:
                log.info("order %s %s slot %d qty %+.8f%s", o.client_id, o.symbol, o.slot,
                         o.qty, " reduce-only" if o.reduce_only else "")
        elif self._dirty_bars >= self.settings.commit_bars or \
                self.clock() - self._last_commit >= self.settings.commit_seconds:
            self.commit()

    def _record_fill(self, f: Fill) -> None:
        self.counters["liquidations" if f.liquidation else "fills"] += 1
        day = self._day(f.ts + self.feed.interval_ms)    # the bar it was booked in
        if f.liquidation:
            day.liquidations += 1
        else:
            day.fills += 1
        self._emit("liquidation" if f.liquidation else "fill",
                   {"symbol": f.symbol, "slot": f.slot, "ts": f.ts, "qty": f.qty,
                    "price": f.price, "client_id": f.client_id})
        self.store.stage("fills", {"fill_id": f.fill_id, "client_id": f.client_id,
                                   "run_id": self.run_id, "symbol": f.symbol, "ts": f.ts,
                                   "qty": f.qty, "price": f.price, "fee": f.fee,
                                   "liquidation": f.liquidation, "slippage": f.slippage})
        if f.liquidation and f.symbol in self.state:   # as the backtest's open phase; a
            # venue's partial liquidation leaves the rest held (the pos is after the bar's fills)
            kn.end_entry(self.state[f.symbol].st, self.broker.pos, f.slot)
        if f.client_id:
            self.store.stage_intent_update(f.client_id, "filled", f.ts)
            self._filled_since_commit.add(f.client_id)
        else:
            self.store.stage("events", {"run_id": self.run_id, "event_key": f.fill_id,
                                        "ts": f.ts, "kind": "liquidation",
                                        "message": f"{f.symbol} slot {f.slot} liquidated "
                                                   f"{f.qty:+.8f} at {f.price:,.2f}",
                                        "data": {"qty": f.qty, "price": f.price}})
            log.warning("%s liquidated: %+.8f at %.2f", f.symbol, f.qty, f.price)
        pos = self.broker.pos[f.slot]
        self.store.stage_position(self.run_id, f.symbol, f.slot, float(pos[ac.P_QTY]),
                                  float(pos[ac.P_ENTRY]), None, f.ts)

    def _record_funding(self, symbol: str, ts: int, payments: list[Funding]) -> None:
        self.store.stage("funding", {"run_id": self.run_id, "symbol": symbol, "ts": ts,
                                     "rate": payments[0].rate, "mark": payments[0].mark,
                                     "payment": sum(p.payment for p in payments)})

    def _strategy_failed(self, sym: SymbolState, ts: int, exc: Exception,
                         held: float) -> float:
        """The strategy raised (or gave a non-finite target) at this bar: the daemon keeps
        running, and the risk engine still decides, on the target returned. The previous
        target is held for `run.strategy_fail_flat_bars - 1` bars in a row (a transient
        error should not close a position); at that many failing bars in a row the symbol's
        target becomes 0 (closed) until the strategy recovers: a position held blind on a
        stale target is the larger risk. 0 holds for ever. The first bar of a streak and the
        closing bar are logged (with the traceback the first time this error is seen),
        stored as `strategy_error` events and emitted (alerts); other bars of the streak
        log one line each."""
        self.counters["strategy_errors"] += 1
        sym.fail_streak += 1
        text = f"{type(exc).__name__}: {str(exc)[:300]}"
        limit = self.settings.strategy_fail_flat_bars
        closing = 0 < limit <= sym.fail_streak
        # the closing is reported once per process: also when a restart (with a lower
        # limit, say) resumes a streak already past it
        if sym.fail_streak == 1 or (closing and not sym.fail_closed):
            if closing:
                sym.fail_closed = True
                n = sym.fail_streak
                action = f"failing {count(n, 'bar')} in a row: closing the position"
            else:
                action = "holding its previous target"
            log.error("strategy %s failed at %s %s: %s; %s", self.strategy.name, sym.name,
                      _iso(ts), text, action,
                      exc_info=exc if sym.fail_streak == 1 and self._first_trace(exc) else None)
            msg = f"strategy {self.strategy.name} failed: {text}"
            self.store.stage("events", {"run_id": self.run_id,
                                        "event_key": f"strategy-error-{sym.name}-{ts}",
                                        "ts": ts, "kind": "strategy_error",
                                        "message": f"{msg}; {action}",
                                        "data": {"symbol": sym.name,
                                                 "failing_bars": sym.fail_streak}})
            self._emit("strategy_error", {"symbol": sym.name, "ts": ts, "message": msg,
                                          "action": action, "closing": closing})
        else:
            log.error("strategy %s failed again at %s %s (%d bars in a row): %s",
                      self.strategy.name, sym.name, _iso(ts), sym.fail_streak, text)
        return 0.0 if closing else held

    def _first_trace(self, exc: Exception) -> bool:
        """True the first time this process sees an error of this type raised at this
        place (the innermost frame's file and line): its traceback is logged once, not at
        every streak (a strategy failing every other bar logged 20 lines a bar)."""
        root = exc.__cause__ or exc              # a UserCodeError: where the user's code raised
        tb = root.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = (type(root).__name__, tb.tb_frame.f_code.co_filename if tb else "",
                 tb.tb_lineno if tb else 0)
        if where in self._traced:
            return False
        self._traced.add(where)
        return True

    def _skip(self, ev: BarEvent, why: str) -> None:
        self.skipped += 1
        log.warning("skipped a malformed bar of %s: %s", ev.symbol, why)

    def commit(self) -> None:
        marks = {s: x.last_ts for s, x in self.state.items() if x.last_ts >= 0}
        self.store.commit(marks or None, self.checkpoint() if marks else None,
                          run_id=self.run_id)
        self._dirty_bars = 0
        self._last_commit = self.clock()
        self._filled_since_commit.clear()

    # ------------------------------------------------------------------ jobs
    def now_ms(self) -> int:
        """The daemon's clock: the feed's, except while a replay's jobs run, which see the
        close they are due at (the feed has already moved on to the next open time)."""
        return self._job_ms if self._job_ms is not None else self.feed.now_ms()

    def _day(self, close_ms: int) -> DayTally:
        """The tally of the day of the bar closing at `close_ms` (its fills at its open, its
        bar, its orders at its close), whatever the feed clock says when it is processed: an
        exchange feed delivers the 23:59 bar after midnight. A new day drops the days older
        than the day before it (their summaries have run)."""
        day = _day_end(close_ms)
        tally = self.days.get(day)
        if tally is None:
            self.days = {d: t for d, t in self.days.items() if d >= day - DAY_MS}
            tally = self.days[day] = DayTally()
        return tally

    def _close_of(self, ev: BarEvent) -> int:
        """The close of the event's bar, never later than the feed clock (an unreadable or
        future `ts` is the feed clock: on_bar skips that bar)."""
        now = self.feed.now_ms()
        try:
            ts = int(ev.bar["ts"])
        except (KeyError, TypeError, ValueError, OverflowError):
            return now
        return min(ts + self.feed.interval_ms, now)

    def run_jobs(self, sim: sc.SimulatedScheduler, close_ms: int) -> None:
        """A replay's jobs due by `close_ms`, once every symbol's bar closing by then has been
        processed, on the clock of that close; symbols whose data ended before it first."""
        self._job_ms = close_ms
        try:
            self._note_ended(close_ms)
            sim.advance(close_ms)
        finally:
            self._job_ms = None

    def _note_ended(self, now: int) -> None:
        """A replayed symbol whose data ended before `now` (`Feed.data_end_ms`) is not a dead
        feed: one `data_ended` event, log line and alert, and no stale-feed watchdog for it
        from then on. As in the portfolio backtest for a symbol without bars, its position
        is held and marked at its last close (the account's equity, margin and liquidation
        checks see it there). The orders decided at its last close wait for an open that
        never comes: they are dropped at the broker and their intents closed `cancelled`
        with the reason (`DATA_ENDED_REASON`), in the commit that checkpoints the end, so a
        resumed run neither reports the end again nor brings them back. A broker without
        `cancel` (live: the order is at the venue already) keeps them."""
        end_of = getattr(self.feed, "data_end_ms", None)
        if end_of is None:
            return
        for x in self.state.values():
            end = end_of(x.name)
            if x.name in self.ended or end is None or now <= end:
                continue
            self.ended.add(x.name)
            held = [float(self.broker.pos[k, ac.P_QTY]) for k in (2 * x.index, 2 * x.index + 1)]
            cancelled = self._cancel_pending(x.name, end)
            left = [o.client_id for o in self.broker.pending() if o.symbol == x.name]
            pos = (f"position {held[0]:+.8f}" + (f" (hedge {held[1]:+.8f})" if held[1] else "")
                   + f" held at its last close {x.last_close:,.6g}") if any(held) else "flat"
            msg = (f"{x.name}: replayed data ended at {_iso(end)}; {pos}"
                   + (f", {len(cancelled)} order(s) decided at its last close cancelled "
                      f"({', '.join(cancelled)})" if cancelled else "")
                   + (f", {len(left)} order(s) left at the venue" if left else "")
                   + "; no stale-feed watchdog for it")
            log.warning("%s", msg)
            self.store.stage("events", {"run_id": self.run_id, "event_key": f"data-ended-{x.name}",
                                        "ts": end, "kind": "data_ended", "message": msg,
                                        "data": {"symbol": x.name, "qty": held[0],
                                                 "hedge_qty": held[1], "cancelled": cancelled,
                                                 "pending": left}})
            self._emit("data_ended", {"symbol": x.name, "ts": end, "qty": held[0],
                                      "hedge_qty": held[1], "mark": x.last_close,
                                      "cancelled": len(cancelled), "pending": len(left)})

    def _cancel_pending(self, symbol: str, end: int) -> list[str]:
        """Cancel `symbol`'s pending orders at its data end `end` (ms): dropped at the
        broker, intents `cancelled` with the reason; returns their client ids."""
        cancel = getattr(self.broker, "cancel", None)
        if cancel is None:
            return []
        done = []
        for o in self.broker.pending():
            if o.symbol != symbol or cancel(o.client_id) is None:
                continue
            self.store.stage_intent_update(o.client_id, "cancelled", end,
                                           reason=DATA_ENDED_REASON.format(end=_iso(end)))
            self._filled_since_commit.add(o.client_id)    # resolved, not yet committed
            done.append(o.client_id)
        return done

    def equity(self) -> tuple[float, float]:
        """(equity, unrealised PnL) at the last marks, quote."""
        eq = float(ac.equity(self.broker.acct, self.broker.pos, self.broker.marks))
        return eq, eq - float(self.broker.acct[ac.A_WALLET])

    def snapshot_equity(self) -> None:
        if not any(x.last_ts >= 0 for x in self.state.values()):
            return
        eq, upnl = self.equity()
        now = self.now_ms()
        self.store.stage("equity", {"run_id": self.run_id, "ts": now,
                                    "equity": eq, "wallet": float(self.broker.acct[ac.A_WALLET]),
                                    "upnl": upnl})
        for s, x in self.state.items():
            for slot in (2 * x.index, 2 * x.index + 1):
                pos = self.broker.pos[slot]
                lp = ac.liquidation_price(self.broker.acct, self.broker.pos, slot,
                                          self.broker.marks, self.broker.floor, self.broker.cap,
                                          self.broker.mmr, self.broker.cum)
                self.store.stage_position(self.run_id, s, slot, float(pos[ac.P_QTY]),
                                          float(pos[ac.P_ENTRY]), float(lp), now)
        self._commit_job_rows()

    def _commit_job_rows(self) -> None:
        """On the wall clock, a job's rows (equity snapshot, daily summary, settlement check)
        are not made again after a kill -9: the restarted clock does not go back to their
        time, as a replay's does. So they commit at once when no bar or send is in flight
        (the checkpoint then equals the last bar's); otherwise with that bar's commit."""
        if self._wall_jobs and self._idle:
            self.commit()

    @property
    def replay(self) -> bool:
        """The feed replays finite data (it has `data_end_ms`: `bot.runtime.feed`), so a
        symbol without a bar has a gap in its data or none left, never a dead feed."""
        return callable(getattr(self.feed, "data_end_ms", None))

    def _note_gap(self, sym: SymbolState, ts: int) -> None:
        """A replayed symbol's bar at `ts` follows missing bars: a gap in its data (or bars
        skipped as malformed), said once per gap (event `data_gap`, a warning, an alert),
        with the open times of the first and last missing bars and their count. The bars
        that are not there are not traded, as in the portfolio backtest: its pending order
        fills at this bar's open."""
        iv = self.feed.interval_ms
        first, last = sym.last_ts + iv, ts - iv
        n = (ts - sym.last_ts) // iv - 1
        msg = (f"{sym.name}: no bar from {_iso(first)} to {_iso(last)} ({count(n, 'bar')}): a "
               "gap in the replayed data, not a dead feed (no stale-feed decision)")
        log.warning("%s", msg, extra={"symbol": sym.name, "bar_ts": ts})
        self.store.stage("events", {"run_id": self.run_id, "ts": first,
                                    "event_key": f"data-gap-{sym.name}-{first}",
                                    "kind": "data_gap", "message": msg,
                                    "data": {"symbol": sym.name, "from": first, "to": last,
                                             "bars": n}})
        self._emit("data_gap", {"symbol": sym.name, "ts": first, "from": first, "to": last,
                                "bars": n})

    def stale_check(self) -> None:
        """Stale-feed watchdog: a symbol without a bar for `stale_bars` intervals gets a
        decision with the stale input set, which makes the risk engine REDUCE. On a live
        (exchange) feed only: a replay cannot go stale, its missing bars are a gap in the
        data (`_note_gap`) or its end (`_note_ended`), and the portfolio backtest of the
        same data has no watchdog."""
        if self.replay:
            return
        now = self.now_ms()
        limit = float(self.pol[en.P_STALE_BARS])
        for x in self.state.values():
            if x.last_ts < 0 or x.stream is None:
                continue
            lag = (now - (x.last_ts + self.feed.interval_ms)) // self.feed.interval_ms
            if lag >= limit:
                sig = x.last_sig.copy()
                sig[en.S_STALE_BARS] = float(lag)
                # stamped 1 ms before the watchdog's time: off the bar grid, so a bar that
                # arrives late keeps its own decision row
                ts = x.last_ts + (int(lag) + 1) * self.feed.interval_ms - 1
                log.warning("%s feed stale for %d bars: deciding with stale data", x.name, lag)
                self.counters["stale"] += 1
                self._emit("stale", {"symbol": x.name, "bars": int(lag), "ts": now})
                self.store.stage("events", {"run_id": self.run_id, "event_key": f"stale-{x.name}-{ts}",
                                            "ts": now, "kind": "stale_feed",
                                            "message": f"{x.name}: no bar for {lag} intervals"})
                target = float(x.st[kn.K_PREV_TARGET]) if np.isfinite(x.st[kn.K_PREV_TARGET]) \
                    else 0.0
                self._decide(x, ts, x.last_close, sig, target, time.perf_counter_ns())

    def poll_commands(self) -> None:
        """The kill switch: `liqbot halt [--flatten]` writes a command row; obeyed here.
        Each command is acked in the commit that writes the checkpoint holding its effect
        (before the first bar there is none: the run row keeps the switch, and `liqbot run`
        reads it), so a kill -9 at any point neither loses an obeyed command nor acks one
        whose effect is not durable; one obeyed whose commit failed is not obeyed twice."""
        staged = False
        for cmd in self.store.pending_commands(self.run_id):
            staged = True
            if self.store.ack_staged(cmd.id):   # type: ignore[arg-type]  # obeyed; commit failed
                continue
            if cmd.kind in ("halt", "flatten"):
                self.halted = True
                self.flatten = self.flatten or cmd.kind == "flatten"
            elif cmd.kind == "resume":
                self.halted = False
                self.flatten = False
            first = not any(x.last_ts >= 0 for x in self.state.values())
            switch = ("flatten" if self.flatten else "halt") if self.halted else None
            self.store.stage_ack(cmd.id, now_ms(), run_id=self.run_id if first else None,  # type: ignore[arg-type]
                                 kill_switch=switch)
            self.store.stage("events", {"run_id": self.run_id, "event_key": f"command-{cmd.id}",
                                        "ts": self.feed.now_ms(), "kind": "command",
                                        "message": f"operator command {cmd.kind} obeyed"})
            log.warning("operator command %s obeyed", cmd.kind)
        if staged:
            self.commit()

    def daily_summary(self) -> None:
        """The day that ended at the last UTC midnight: equity now, and the day's bars (per
        symbol and in all: 1,440 a symbol on a full day of 1m bars), orders, fills and
        liquidations (`DayTally`; a restart resumes the day's figures from the checkpoint)."""
        eq, upnl = self.equity()
        now = self.now_ms()
        day = now // DAY_MS * DAY_MS
        tally = self.days.get(day, DayTally())
        bars = sum(tally.bars.values())
        per = ", ".join(f"{s} {n:,}" for s, n in sorted(tally.bars.items()))
        figures = {"bars": bars, "bars_by_symbol": dict(sorted(tally.bars.items())),
                   "orders": tally.orders, "fills": tally.fills,
                   "liquidations": tally.liquidations}
        self.store.stage("events", {"run_id": self.run_id, "event_key": f"daily-{now}", "ts": now,
                                    "kind": "daily_summary",
                                    "message": f"day to {_iso(day)}: equity {eq:,.2f} "
                                               f"(unrealised {upnl:,.2f}), {bars:,} bars"
                                               + (f" ({per})" if len(tally.bars) > 1 else "")
                                               + f", {tally.orders} orders, {tally.fills} "
                                               f"fills, {tally.liquidations} liquidations",
                                    "data": figures})
        self._emit("daily_summary", {"ts": now, "equity": eq, "upnl": upnl, **figures})
        self._commit_job_rows()

    def funding_check(self) -> None:
        now = self.now_ms()
        self.store.stage("events", {"run_id": self.run_id, "event_key": f"settlement-{now}",
                                    "ts": now, "kind": "settlement",
                                    "message": f"funding settlement time; funding paid so far "
                                               f"{float(self.broker.acct[ac.A_FUNDING]):,.4f}"})
        self._commit_job_rows()

    def reconcile(self) -> None:
        """Paper: every committed open intent must be pending at the broker or filled since
        the last commit; anything else is recorded as an event (it would be a bug)."""
        pending = {o.client_id for o in self.broker.pending()}
        for it in self.store.open_intents(self.run_id):
            if it.client_id not in pending and it.client_id not in self._filled_since_commit:
                log.error("reconcile: intent %s is open in the store but unknown to the broker",
                          it.client_id)
                self.store.stage("events", {"run_id": self.run_id,
                                            "event_key": f"reconcile-{it.client_id}",
                                            "ts": self.feed.now_ms(), "kind": "reconcile",
                                            "message": f"intent {it.client_id} open in the "
                                                       "store, unknown to the broker"})

    def jobs(self, simulated: bool = True) -> list[sc.Job]:
        """The scheduled jobs; `simulated`: on a replay's clock, where every bar of a close
        is in when its jobs run, so the daily summary runs at 00:00 sharp (on the wall clock
        `DAILY_SUMMARY_DELAY_S` later)."""
        s = self.settings
        daily = sc.daily() if simulated else sc.daily(second=DAILY_SUMMARY_DELAY_S % 60,
                                                      minute=DAILY_SUMMARY_DELAY_S // 60)
        return [
            sc.Job("equity", sc.aligned(s.equity_every_s), self.snapshot_equity),
            sc.Job("stale", sc.aligned(s.stale_check_s), self.stale_check),
            sc.Job("reconcile", sc.every(s.reconcile_every_s), self.reconcile, wall=True),
            sc.Job("settlement", sc.settlements(), self.funding_check),
            sc.Job("daily", daily, self.daily_summary),
            sc.Job("positioning", sc.aligned(s.positioning_every_s),
                   lambda: _background(self.feed.poll_positioning(), "open-interest poll")),
            sc.Job("commands", sc.every(COMMAND_POLL_S), self.poll_commands, wall=True),
        ]

    # ------------------------------------------------------------------ run
    async def warm_up(self) -> None:
        """Step the signals and the strategy through the feed's history (no decisions, no
        orders), so an exchange run starts with warm estimators. A replay has none."""
        for s, x in self.state.items():
            if x.stream is not None:
                continue                       # restored from a checkpoint
            hist = await self.feed.history(s)
            if hist is None or len(hist) == 0:
                continue
            rows = ss.bar_matrix(hist)
            x.stream = ss.SignalStream(x.brackets, self.feed.interval_ms, float(rows[0, ss.X_CLOSE]))
            outs = x.stream.run(rows)
            x.strat = self.strategy.stream(s, self.feed.interval_ms)
            for k in range(len(rows)):
                x.strat.update(rows[k], outs[k])
            last = outs[-1]
            x.last_sig = last[ss.O_SIG:ss.O_SIG + en.N_SIG].copy()
            x.last_window = (float(last[ss.O_FILL + ss.F_VOL_W]),
                             float(last[ss.O_FILL + ss.F_SIG_W]),
                             float(last[ss.O_FILL + ss.F_LIQ_W]))
            x.last_ts = int(hist.ts[-1])
            x.last_close = float(rows[-1, ss.X_CLOSE])
            self.broker.set_mark(s, float(rows[-1, ss.X_MARK_CLOSE]))
            log.info("%s warmed up on %d bars of history", s, len(rows))

    async def run(self, simulated: bool) -> None:
        """Consume the feed until it ends or a signal asks to stop; commit; return."""
        loop = asyncio.get_running_loop()
        self._task = None
        for sig_no in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):   # not the main thread
                loop.add_signal_handler(sig_no, self._stop)
        start = self.feed.now_ms()
        jobs = self.jobs(simulated)
        wall = sc.wall_scheduler([j for j in jobs if j.wall or not simulated])
        # a resumed replay's clock stands at its watermark bar's close: the jobs due inside
        # that bar ran after its commit in the life that was killed (their rows may be
        # lost), so the window reopens at the bar's open and they run again at its close
        after = start - self.feed.interval_ms if self.restored else start
        sim = sc.SimulatedScheduler([j for j in jobs if not j.wall], after) \
            if simulated else None
        # the close whose jobs wait for the rest of its bars: they run when the feed moves
        # on to a later time, or ends (a resumed run's watermark close: other symbols' bars
        # of that minute may come first)
        due: int | None = start if self.restored else None
        self._wall_jobs = not simulated
        wall.start()
        try:
            if self.live:
                await self._live_start()
            await self.warm_up()
            self.reconcile()                  # before any new order
            self.poll_commands()              # a halt sent while no daemon ran binds bar 1
            events = self.feed.events().__aiter__()
            while not self.stopping:
                self._idle = True
                try:
                    ev = await self._next_event(events)
                finally:
                    self._idle = False
                if ev is None:
                    if sim is not None and due is not None and not self.stopping:
                        self.run_jobs(sim, due)          # the feed ended: its last close
                    break
                if sim is not None:
                    # by the bar's close, not the feed clock: an exchange feed's clock runs on
                    # past it (jobs then ran between two symbols' bars of one minute)
                    now = self._close_of(ev)
                    if due is not None and now > due:   # every bar closing by `due` is in
                        self.run_jobs(sim, due)
                    due = now if due is None else max(due, now)
                if self.live:
                    await self._guarded(self._live_sync(), "sync")
                self.on_bar(ev)
                if self.live:                 # after the intents' commit (in on_bar)
                    await self._guarded(self.broker.flush(), "send")
                    # an order the caps refused is closed now, not at the next bar's sync
                    # (meanwhile the reconcile job called its intent unknown, an error)
                    self._stage_broker_events()
                if self.stopping:
                    break
            if self.live:                     # the last orders' fills and the final books
                await self._guarded(self._live_sync(), "sync")
                await self._guarded(self.broker.reconcile(), "reconcile")
                self._stage_broker_events()
        finally:
            await sc.stop_wall(wall)
            self.commit()
            if self.live:
                await self.broker.close()

    async def _live_start(self) -> None:
        """Markets, account settings, adoption or catch-up, then the first sync. Nothing has
        been sent yet, so a malformed answer to the start (a payload of the wrong shape) ends
        it with exit 2 naming it, instead of a traceback; the same command starts again. The
        first sync is retried at the next bar, as every later one."""
        try:
            await self.broker.start()
            if not self.restored:             # a new live run starts at the exchange's wallet
                for x in self.state.values():
                    x.st[:] = kn.new_state(float(self.broker.acct[ac.A_WALLET]))
        except (LiqbotError, asyncio.CancelledError):
            raise
        except Exception as exc:              # noqa: BLE001 - reported, nothing was sent
            raise LiqbotError(f"live start: reading the exchange failed ({exc_text(exc)}); no "
                              "order was sent, run the same command again") from None
        await self._guarded(self._live_sync(), "sync")

    async def _guarded(self, step: Any, what: str) -> None:
        """A live exchange step that must not end the daemon: an exchange outage, an
        expired key or a malformed payload is logged and recorded; the next bar retries
        (pending orders stay pending, unknown ones are looked up before any resend)."""
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception as exc:              # noqa: BLE001 - logged, recorded, retried
            msg = f"live {what} failed: {exc_text(exc)}"
            log.error("%s; retrying at the next bar", msg)
            self.store.stage("events", {"run_id": self.run_id, "event_key":
                                        f"live-{what}-{self.feed.now_ms()}",
                                        "ts": int(self.feed.now_ms()), "kind": f"live_{what}",
                                        "message": msg, "data": {}})

    async def _live_sync(self) -> None:
        """The live broker reads the exchange (fills, funding, reconciliation) before a bar;
        what it adopted or refused becomes store events."""
        await self.broker.sync(self.feed.now_ms())
        self._stage_broker_events()

    def _stage_broker_events(self) -> None:
        for e in self.broker.drain_events():
            self.store.stage("events", {"run_id": self.run_id, **e})
            log.warning("%s: %s", e["kind"], e["message"])
            if e["kind"] == "position_adopted":
                self._adopted_reduction(e["data"])
            cid = e["data"].get("client_id") if e["kind"].startswith("reject") else None
            if cid:                           # never placed: the intent is closed now
                self.store.stage_intent_update(cid, "rejected", int(e["ts"]), e["message"])
                self._filled_since_commit.add(cid)
                self.counters["rejects"] += 1     # as a paper order the venue refused
                self._emit("reject", {"symbol": e["data"].get("symbol", ""),
                                      "client_id": cid, "qty": e["data"].get("qty", 0.0),
                                      "ts": int(e["ts"])})
        for s, x in self.state.items():       # adopted positions are the positions
            for slot in (2 * x.index, 2 * x.index + 1):
                pos = self.broker.pos[slot]
                if pos[ac.P_QTY] != 0.0:
                    self.store.stage_position(self.run_id, s, slot, float(pos[ac.P_QTY]),
                                              float(pos[ac.P_ENTRY]), None, self.feed.now_ms())

    def _adopted_reduction(self, data: dict[str, Any]) -> None:
        """The venue holds less of a main position than our books, and we did not sell it:
        a liquidation whose trade could not be named, or the operator's own close. `entry`
        sizing holds what is left, as after a liquidation fill, instead of buying it back."""
        x = self.state.get(str(data.get("symbol")))
        ours, theirs = float(data.get("ours", 0.0)), float(data.get("theirs", 0.0))
        if x is not None and abs(theirs) < abs(ours) and theirs * ours >= 0.0:
            kn.end_entry(x.st, self.broker.pos, 2 * x.index)

    async def _next_event(self, events: AsyncIterator[BarEvent]) -> BarEvent | None:
        """The feed's next bar, or None when it ends or a stop interrupts the wait: `_stop`
        cancels this await only (never a bar's processing or an order's send), so an idle
        exchange feed or a slow replay stops at once instead of at its next bar."""
        task = asyncio.current_task()
        self._task = task
        try:
            return await events.__anext__()
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            if not self.stopping or task is None:
                raise
            task.uncancel()                   # our own stop, taken: the run goes on to commit
            return None
        finally:
            self._task = None

    def _stop(self) -> None:
        if not self.stopping:                 # SIGINT and SIGTERM both land here: log once
            log.warning("stop requested: no new bars, finishing writes")
        self.stopping = True
        if self._task is not None:            # waiting for a bar: stop waiting
            self._task.cancel()


def _bar_problem(x: np.ndarray, last_ts: int, interval_ms: int) -> str:
    ts = x[ss.X_TS]
    if not np.isfinite(ts) or ts != int(ts):
        return "timestamp is not a whole number of ms"
    if int(ts) <= last_ts:
        return "old"
    if int(ts) % interval_ms:
        return f"timestamp {int(ts)} is not aligned to the {interval_ms} ms interval"
    o, h, lo, c = x[ss.X_OPEN], x[ss.X_HIGH], x[ss.X_LOW], x[ss.X_CLOSE]
    if not (np.isfinite(o) and np.isfinite(h) and np.isfinite(lo) and np.isfinite(c)):
        return "non-finite price"
    if min(o, h, lo, c) <= 0.0:
        return "non-positive price"
    if h < max(o, c) or lo > min(o, c):
        return "high/low inconsistent with open/close"
    v = x[ss.X_VOLUME]
    if not (np.isfinite(v) and v >= 0.0):
        return "volume missing or negative"
    for k in (ss.X_MARK_OPEN, ss.X_MARK_HIGH, ss.X_MARK_LOW, ss.X_MARK_CLOSE):
        if not (x[k] > 0.0):
            return "mark price missing or non-positive"
    return ""


def _reducing_part(q: float, held: float) -> float:
    """The part of order `q` that reduces position `held` (0 if it would grow it)."""
    if q == 0.0 or held == 0.0 or q * held > 0.0:
        return 0.0
    return max(q, -held) if held > 0.0 else min(q, -held)


def _reduce_only(q: float, held: float) -> float:
    """`_reducing_part` of an order the risk engine sent while REDUCING / HALTED, where it
    never grows a position: a growing one is a bug, logged and dropped."""
    if q != 0.0 and (held == 0.0 or q * held > 0.0):
        log.error("an order of %+.8f on a position of %+.8f while reducing: dropped", q, held)
    return _reducing_part(q, held)


def _num(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _iso(ms: int) -> str:
    from bot.data.dataset import iso
    return iso(ms)


def percentiles(ns: list[int]) -> dict[str, float]:
    """p50/p99 in microseconds of a list of nanosecond durations."""
    if not ns:
        return {"n": 0, "p50_us": float("nan"), "p99_us": float("nan")}
    a = np.asarray(ns) / 1000.0
    return {"n": len(ns), "p50_us": float(np.percentile(a, 50)),
            "p99_us": float(np.percentile(a, 99))}


def check_live_allowed(mode: str, live_flag: bool) -> None:
    """Live needs `mode = "live"` AND `--live` (credentials and caps: `bot.cli.run`)."""
    if live_flag and mode != "live":
        raise LiqbotError('--live: the config says mode = "paper"; set mode = "live" in the '
                          "config too (both are required for live trading)")
    if mode == "live" and not live_flag:
        raise LiqbotError('mode = "live" in the config but --live was not given: live trading '
                          "needs both; without --live nothing runs (paper is the default)")


def _background(coro: Any, what: str) -> asyncio.Future[Any]:
    """A job's coroutine as a task of its own whose failure is logged, not left to
    asyncio's "Task exception was never retrieved" traceback on stderr."""
    task = asyncio.ensure_future(coro)

    def done(t: asyncio.Future[Any]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.warning("%s failed: %s", what, exc_text(t.exception()))
    task.add_done_callback(done)
    return task
