"""`liqbot drill DATASET...`: the daemon in live mode against the local emulator through
real ccxt, then the backtest of the same data, and a parity report.

The emulator (bot/emulator) replays the dataset on 127.0.0.1; the daemon reads the same
closed bars (the replay feed) and trades through the LiveBroker: ccxt `binanceusdm` signed
REST orders with client ids, the ccxt.pro user-data stream, REST trade history and funding
income, reconciliation. At `--speed 0` (default) the two run in lockstep: the emulator's
clock moves to each bar's close before the daemon sees the bar, so an order decided at a
close reaches the venue during the next bar's first instant (the backtest's fill at the
next open), whatever the faults cost in wall time. At `--speed N` both run free at N x
real time and the differences are latency's. Orders decided at the last close are not
sent: the data ends there and the backtest never fills them. `--feed exchange` (speed > 0
only): the daemon reads its bars through `ExchangeFeed` from the emulator's REST and
websockets on the emulator's clock (`EmulatorFeed`; docs/live.md "Drill").

JSON (`--json FILE`): parity, duplicate_orders, lost_fills, equity_rel_diff,
faults_injected, decisions / fills / funding / liquidations comparisons (funding is PAID:
+ paid, - received, as the backtest's `funding`), differences with their causes, orders,
broker statistics, duration; with `--feed exchange` also
exchange_feed (bars from the streams / by REST backfill / late / missing, max delay).
With `--json -` the JSON alone goes to stdout and the text report to stderr (as backtest).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import numpy as np
import typer

from backtests import engine as eg
from backtests.runner import RunSettings, prepare
from backtests.runner import run as backtest
from bot.cli.backtest import _fees
from bot.cli.paths import check_output, console, dumps, is_stdout, write_output
from bot.cli.run import run_choices
from bot.cli.tiers import TiersOption, brackets_for
from bot.data.bars import Bars
from bot.data.binance_vision import interval_name
from bot.data.dataset import Dataset, iso
from bot.errors import LiqbotError
from bot.execution import kernel as kn
from bot.execution.live import LiveBroker, LiveSettings, exchange_brackets
from bot.execution.venues import VENUES
from bot.mechanics import account as ac
from bot.mechanics import brackets as br
from bot.risk import engine as en
from bot.risk.policy import load_policy
from bot.runtime.exchange_feed import ExchangeFeed
from bot.runtime.feed import BarEvent
from bot.runtime.replay import ReplayFeed
from bot.signals import stream as ss
from bot.store import Store

EQUITY_TOL = 1e-3              # acceptance: final equity within 0.1 %
QTY_REL_TOL = 1e-4             # fill quantity beyond lot rounding (equity-driven sizing)
PRICE_REL_TOL = 1e-4           # fill price (slippage depends on the rounded quantity)
KEY, SECRET = "drillKEY0123456789abcdef", "drill-secret-" + "x" * 24   # emulator-only pair
FEEDS = ("dataset", "exchange")
XFEED_TICK_S = 0.01            # --feed exchange: the emulator's stream push / the feed's tick
log = logging.getLogger("liqbot.drill")


class LockstepFeed(ReplayFeed):
    """The replay feed that moves the emulator's clock to each bar's close first."""

    def __init__(self, bars: Bars, emu: Any, on_last: Any = None) -> None:
        super().__init__({bars.symbol: bars}, 0.0)
        self.emu = emu
        self.on_last = on_last
        self.last_close = int(bars.ts[-1]) + bars.interval_ms

    async def events(self) -> AsyncIterator[BarEvent]:
        async for ev in super().events():
            if ev.received_ms > self.emu.clock.now_ms():
                self.emu.clock.set(ev.received_ms)
                self.emu.venue.sync()
                await self.emu.hub.flush()
            if ev.received_ms >= self.last_close and self.on_last is not None:
                self.on_last()
            yield ev


class EmulatorFeed:
    """`--feed exchange`: the daemon's real market-data path (`ExchangeFeed`: ccxt REST and
    ccxt.pro streams) over the emulator, on the emulator's clock. The emulator stands paused
    at the first bar's open until the kline, mark and liquidation streams are subscribed,
    then runs free; the feed ends after the replay's last bar (the orders decided at its
    close are not sent, as in lockstep), or when the clock has reached the end and the
    stream has been silent for TAIL_WAIT_S (the bars still missing are then counted)."""

    TAIL_WAIT_S = 10.0                 # wall s after the data's end: past the feed's grace
    SUBSCRIBE_WAIT_S = 10.0            # wall seconds for the stream subscriptions

    def __init__(self, feed: Any, emu: Any, bars: Bars, on_last: Any = None) -> None:
        self.feed, self.emu, self.on_last = feed, emu, on_last
        self.symbols: tuple[str, ...] = feed.symbols
        self.interval_ms: int = feed.interval_ms
        self.last_ts = int(bars.ts[-1])
        # positioning is not polled when the dataset has none (nothing to deliver)
        self.positioning = bars.has("open_interest") or bars.has("long_short_ratio")
        #: (bar open, ms after its close on the emulator's clock when it reached the daemon)
        self.arrivals: list[tuple[int, int]] = []

    def now_ms(self) -> int:
        return int(self.feed.now_ms())

    async def history(self, symbol: str, until_ms: int | None = None) -> Bars | None:
        return await self.feed.history(symbol, until_ms)      # nothing closed yet: None

    async def poll_positioning(self) -> None:
        if self.positioning:
            await self.feed.poll_positioning()

    async def close(self) -> None:
        await self.feed.close()

    def _subscribed(self) -> bool:
        low = self.symbols[0].lower()
        streams = {x for c in self.emu.hub.conns for x in c.streams}
        return all(any(x.startswith(f"{low}@{k}") for x in streams)
                   for k in ("kline_", "markPrice", "forceOrder"))

    async def events(self) -> AsyncIterator[BarEvent]:
        await self.feed.start()
        t0 = time.monotonic()
        while not self._subscribed():
            if time.monotonic() - t0 > self.SUBSCRIBE_WAIT_S:
                raise LiqbotError("drill --feed exchange: the feed's websocket streams were "
                                  f"not subscribed within {self.SUBSCRIBE_WAIT_S:g} s")
            await asyncio.sleep(0.01)
        self.emu.clock.resume()
        source = self.feed.events().__aiter__()
        nxt: asyncio.Task[BarEvent] | None = None
        quiet_since: float | None = None
        try:
            while True:
                if nxt is None:
                    nxt = asyncio.ensure_future(source.__anext__())
                done, _ = await asyncio.wait({nxt}, timeout=0.25)
                if not done:
                    if not self.emu.clock.finished:
                        continue
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since >= self.TAIL_WAIT_S:
                        log.error("drill: the exchange feed delivered no bar for %.0f s after "
                                  "the data's end", self.TAIL_WAIT_S)
                        return
                    continue
                try:
                    ev = nxt.result()
                except StopAsyncIteration:
                    return
                nxt, quiet_since = None, None
                ts = int(ev.bar["ts"])
                self.arrivals.append((ts, ev.received_ms - ts - self.interval_ms))
                if ts >= self.last_ts and self.on_last is not None:
                    self.on_last()
                yield ev
                if ts >= self.last_ts:
                    return
        finally:
            if nxt is not None and not nxt.done():
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt

    def figures(self, bars: Bars) -> dict[str, Any]:
        """What reached the daemon through the exchange feed: bars from the streams, by
        REST backfill, late (after the close by more than the bars' delivery tick)."""
        late = [(ts, ms) for ts, ms in self.arrivals if ms > self.interval_ms]
        want = {int(t) for t in bars.ts}
        got = {ts for ts, _ in self.arrivals}
        return {"bars": len(self.arrivals), "dataset_bars": len(want),
                "positioning_polled": self.positioning,
                "missing": len(want - got), **dict(self.feed.stats),
                "rest_filled": [iso(ts) for _, ts in self.feed.rest_bars][:50],
                "late": len(late), "late_bars": [iso(ts) for ts, _ in late][:50],
                "max_delay_ms": max((ms for _, ms in self.arrivals), default=0)}


def load_data(sources: list[str]) -> Dataset:
    """One dataset directory or scenario name, or exchange files merged (klines, funding...)."""
    from backtests.scenarios import load_scenario
    from bot.data.importer import build_dataset

    if len(sources) == 1 and not Path(sources[0]).is_file():
        return load_scenario(sources[0], "DATASET")
    missing = [s for s in sources if not Path(s).is_file()]
    if missing:
        raise LiqbotError(f"drill: {missing[0]} is not a file (give a dataset directory, a "
                          "scenario, or exchange files such as klines and funding CSVs)")
    return build_dataset(sources)


def _check_feed(feed: str, speed: float) -> None:
    if feed not in FEEDS:
        raise LiqbotError(f"--feed: expected one of {', '.join(FEEDS)}, got {feed!r}")
    if feed == "exchange" and speed <= 0.0:
        raise LiqbotError("--feed exchange needs --speed N > 0: the emulator must run free "
                          "(--speed 0 is lockstep, which only the dataset feed can follow)")


async def run_drill(bars: Bars, strategy: Any, preset: str, settings: RunSettings,
                    speed: float = 0.0, faults: Any = None, live: LiveSettings | None = None,
                    store_url: str | None = None, feed: str = "dataset",
                    tiers: Path | None = None) -> dict[str, Any]:
    """Emulator + live daemon, then the backtest; returns the report (module docstring).
    `feed`: "dataset" (the daemon reads the dataset's bars) or "exchange" (`EmulatorFeed`:
    the bars come from the emulator's REST and streams; needs speed > 0). The emulator
    serves `tiers` (`--tiers`; default the shipped table or its stand-in); the daemon trades
    on what the emulator answers to `fetch_leverage_tiers`, as a live run does."""
    import ccxt.pro as ccxt_pro

    from bot.emulator.faults import FaultProfile
    from bot.emulator.server import Emulator, EmulatorConfig, point_ccxt
    from bot.runtime.daemon import Daemon

    venue_tiers = brackets_for(bars.symbol, tiers)      # what the emulator serves
    policy = load_policy(preset)
    sizing = str(getattr(strategy, "sizing", "entry"))
    fp = kn.fill_params(settings.fills, settings.fees, settings.band, sizing)
    _check_feed(feed, speed)
    lockstep = speed <= 0.0
    xfeed = feed == "exchange"
    zero_filled: list[str] = []
    if xfeed:
        bars, zero_filled = _as_published(bars)
    emu_cfg = EmulatorConfig(speed=speed if speed > 0 else 1.0, paused=lockstep or xfeed,
                             start_ms=int(bars.ts[0]), wallet=settings.wallet,
                             fees=settings.fees, fills=settings.fills,
                             weight_limit=10**9 if lockstep else 2400,
                             # exchange feed: Binance's weight per SIMULATED minute, and the
                             # streams pushed every 10 ms wall (a 1m bar lasts 60000/speed ms)
                             weight_window_s=60.0 / speed if xfeed else 60.0,
                             tick_s=XFEED_TICK_S if xfeed else 0.05,
                             faults=faults or FaultProfile())
    emu = Emulator([Dataset(bars)], {KEY: SECRET}, emu_cfg, {bars.symbol: venue_tiers})
    await emu.start()
    tmp = tempfile.TemporaryDirectory(prefix="liqbot-drill-")
    store = Store(store_url or f"sqlite:///{tmp.name}/drill.db")
    t0 = time.perf_counter()
    src: Any = None
    try:
        ex = point_ccxt(ccxt_pro.binanceusdm({"apiKey": KEY, "secret": SECRET,
                                              "enableRateLimit": False, "timeout": 10_000}),
                        emu.rest_url, emu.ws_url)
        live = live or LiveSettings()
        try:                            # as a live run: the venue's tiers, at its setting
            brackets = br.at_leverage((await exchange_brackets(
                ex, VENUES["binanceusdm"], [bars.symbol], live))[bars.symbol], live.leverage)
        except BaseException:
            with contextlib.suppress(Exception):
                await ex.close()
            raise
        broker = LiveBroker(ex, VENUES["binanceusdm"], [bars.symbol], [brackets],
                            bars.interval_ms, live)

        def stop_sending() -> None:
            broker.sending = False

        if xfeed:
            await _prewarm(bars, strategy, policy, fp, brackets, settings.wallet)
            src = EmulatorFeed(ExchangeFeed(
                [bars.symbol], interval=interval_name(bars.interval_ms),
                rest_base_url=emu.rest_url, ws_base_url=emu.ws_url,
                requests_per_second=20.0 * speed, clock=emu.clock.unclamped_ms,
                clock_rate=speed,
                tick_s=XFEED_TICK_S, reconnect_s=(0.05, 1.0)), emu, bars, stop_sending)
        else:
            src = LockstepFeed(bars, emu, stop_sending) if lockstep else \
                ReplayFeed({bars.symbol: bars}, speed)
        run_ = store.open_run("live", "drill:emulator", [bars.symbol], strategy.name,
                              strategy.params, preset, settings.wallet)
        daemon = Daemon(run_id=run_.run_id, feed=src, store=store, strategy=strategy,
                        policy=policy.to_array(), fp=fp, brackets={bars.symbol: brackets},
                        wallet=settings.wallet, broker=broker)
        if not lockstep and not xfeed:
            emu.clock.set(int(bars.ts[0]))
        if xfeed:
            # a full collection of the set-up's objects pauses the loop for up to ~0.3 s
            # wall, i.e. minutes of the emulator's clock at 600 x: keep them out of it
            gc.collect()
            gc.freeze()
        try:
            await daemon.run(simulated=True)
        finally:
            if xfeed:
                gc.unfreeze()
        duration = time.perf_counter() - t0
        venue = _venue_figures(emu, bars.symbol)
        bt = backtest(prepare(bars, brackets, settings), strategy, policy, brackets, settings,
                      "on")
        report = compare(store, run_.run_id, daemon, bt, bars, venue,
                         float(broker.step.get(bars.symbol, 0.0)))
        if xfeed:
            _feed_report(report, {**src.figures(bars), "zero_filled": zero_filled}, bars)
        report.update({"duration_s": duration, "speed": speed, "lockstep": lockstep,
                       "feed": feed,
                       "faults_injected": dict(emu.faults.counts),
                       "broker": dict(broker.stats, duplicates_ignored=broker.ledger.duplicates),
                       "orders": daemon.seq, "bars": daemon.bars_processed,
                       "strategy": strategy.describe(), "preset": preset,
                       "symbol": bars.symbol, "from": iso(int(bars.ts[0])),
                       "to": iso(int(bars.ts[-1])),
                       # what the daemon read from the venue and traded on
                       "brackets": brackets.rows()})
        report["parity"] = bool(report["parity"])
        return report
    finally:
        if xfeed and src is not None:
            await src.close()
        store.close()
        await emu.stop()
        tmp.cleanup()


async def _prewarm(bars: Bars, strategy: Any, policy: Any, fp: np.ndarray,
                   brackets: br.Brackets, wallet: float) -> None:
    """A throwaway paper daemon over the first bars, so the compiled kernels are loaded
    before the emulator's clock runs free (else the first live bar waits for them while the
    venue moves on: at 600 x a second of loading is ten bars)."""
    from bot.runtime.daemon import Daemon

    with tempfile.TemporaryDirectory(prefix="liqbot-drill-warm-") as tmp:
        store = Store(f"sqlite:///{tmp}/warm.db")
        try:
            run_ = store.open_run("paper", "drill:warm-up", [bars.symbol], strategy.name,
                                  strategy.params, "warm-up", wallet)
            head = bars.between(int(bars.ts[0]), int(bars.ts[min(len(bars) - 1, 8)]))
            d = Daemon(run_id=run_.run_id, feed=ReplayFeed({bars.symbol: head}, 0.0),
                       store=store, strategy=strategy, policy=policy.to_array(), fp=fp,
                       brackets={bars.symbol: brackets}, wallet=wallet)
            await d.run(simulated=True)
        finally:
            store.close()


def _as_published(bars: Bars) -> tuple[Bars, list[str]]:
    """The bars as the emulator publishes them to an exchange feed: a dataset without
    liquidation sums (absent or NaN) has a silent forceOrder stream, which a connected feed
    reads as none (0.0), so the backtest reference gets the same zeros. Returns the bars and
    the columns filled."""
    filled: dict[str, np.ndarray] = {}
    for name in ("liq_long_notional", "liq_short_notional"):
        v = np.asarray(bars[name], dtype=float) if bars.has(name) else np.full(len(bars), np.nan)
        if not np.isfinite(v).all():
            filled[name] = np.where(np.isfinite(v), v, 0.0)
    return (bars.with_columns(**filled) if filled else bars), sorted(filled)


#: dataset columns the exchange feed does not deliver bar by bar (absent, or REST-polled
#: every `positioning_every_s`): a dataset with them cannot keep decision parity
NOT_PER_BAR = ("premium_close", "top_long_short_ratio", "funding_rate_avg", "open_interest",
               "open_interest_value", "long_short_ratio")


def _not_per_bar(bars: Bars) -> list[str]:
    """The columns of `bars` the signals read that the exchange feed cannot deliver bar by
    bar: NOT_PER_BAR, and the vendor fallbacks the signals read in place of a missing
    column (`stream.fallbacks_read`: no exchange feed carries them)."""
    return [c for c in NOT_PER_BAR if bars.has(c) and np.isfinite(bars[c]).any()] + \
        ss.fallbacks_read(bars)


def _feed_report(report: dict[str, Any], fig: dict[str, Any], bars: Bars) -> None:
    """`--feed exchange`: how the bars reached the daemon; a difference at a bar that came
    late or by REST backfill is put down to the feed (its orders met another bar's price)."""
    report["exchange_feed"] = {**fig, "not_per_bar": _not_per_bar(bars)}
    at = {iso(int(t)): int(t) for t in bars.ts}
    suspect = set(fig["late_bars"]) | set(fig["rest_filled"])
    first = min((at[t] for t in suspect if t in at), default=None)
    for d in report["differences"]:
        ts = at.get(d["ts"])
        hit = None if ts is None else next(
            (t for t in (d["ts"], iso(ts - bars.interval_ms)) if t in suspect), None)
        if hit is not None:
            how = "late" if hit in fig["late_bars"] else "by REST backfill"
            d["cause"] = f"feed latency: the bar of {hit} reached the daemon {how}; " + \
                str(d["cause"])
        elif first is not None and ts is not None and ts > first:
            d["cause"] = (f"feed: bars since {iso(first)} came late or by REST backfill (a "
                          "REST kline has no taker flow, no liquidations), so the signal "
                          "inputs differ from then on; " + str(d["cause"]))


def _venue_figures(emu: Any, symbol: str) -> dict[str, Any]:
    """The exchange's truth for the drill's API key: orders per client id, trades, the
    final position and margin balance."""
    emu.venue.sync()
    a = emu.venue.accounts.get(KEY)
    if a is None:
        return {"orders": 0, "by_client": {}, "trades": [], "qty": 0.0, "equity": float("nan")}
    by_client = Counter(o.client_id for o in a.orders.values() if o.type != "LIQUIDATION")
    slot = emu.venue.slot[symbol]
    return {"orders": len(a.orders), "by_client": dict(by_client),
            "trades": [(t.symbol, t.trade_id) for t in a.trades],
            "qty": float(a.pos[slot, ac.P_QTY]),
            "equity": float(emu.venue.totals(a)["margin_balance"])}


def compare(store: Store, run_id: str, daemon: Any, bt: Any, bars: Bars, venue: dict[str, Any],
            step: float) -> dict[str, Any]:
    """Live run (store rows) against the backtest (records, trades) bar by bar."""
    iv = bars.interval_ms
    index = {int(t): i for i, t in enumerate(bars.ts)}
    diffs: list[dict[str, Any]] = []
    events = store.events(run_id)
    rejects = [e for e in events if e.kind.startswith("reject")]
    rec = bt.records
    # decisions: state and reasons on every bar
    decs = {d.bar_ts: d for d in store.decisions(run_id) if d.bar_ts in index}
    dec_mismatch = 0
    for ts, i in index.items():
        d = decs.get(ts)
        if d is None or d.state != int(rec[i, eg.R_STATE]) or \
                d.reasons != int(rec[i, eg.R_REASONS]):
            dec_mismatch += 1
            if dec_mismatch <= 20:
                diffs.append({"kind": "decision", "ts": iso(ts),
                              "live": None if d is None else [en.STATE_NAMES[d.state], d.reasons],
                              "backtest": [en.STATE_NAMES[int(rec[i, eg.R_STATE])],
                                           int(rec[i, eg.R_REASONS])],
                              "cause": _cause(rejects, ts, iv, "the account differs after an "
                                              "earlier difference (see the fills)")})
    # fills: bar, quantity, price; liquidations. An order the venue executed as several
    # trades (book levels) is one fill of the backtest: its trades are summed (VWAP price)
    trades = sorted(store.fills(run_id), key=lambda f: (f.ts, f.fill_id))
    live_fills = _per_order(trades)
    partial = {str(e.data.get("client_id")): e.message for e in events
               if e.kind == "order_partial"}
    tr = bt.trades
    bt_fills = [(int(bars.ts[int(t[0])]), float(t[2]), float(t[3]), bool(t[6] == 1.0))
                for t in tr]
    matched, qty_diff, px_diff = 0, 0.0, 0.0
    used: set[int] = set()
    band = float(daemon.fp[kn.F_BAND])
    edge: list[str] = []            # fills one side made at the rebalance band's edge
    parts: list[str] = []           # fills the venue executed only in part (EXPIRED)
    rest_of: list[tuple[int, float]] = []      # their bars and sides
    for f in live_fills:
        k = next((j for j, b in enumerate(bt_fills) if j not in used and b[0] == f.ts and
                  b[3] == f.liquidation and np.sign(b[1]) == np.sign(f.qty)), None)
        if k is None:
            why = _band_edge(rec, bars, index.get(f.ts, 0) - 1, band, step)
            if why:
                edge.append(iso(f.ts))
            why = why or next((f"partial fill: the rest of the order partly filled at "
                               f"{iso(t)}, ordered again at the next decision"
                               for t, sign in rest_of
                               if 0 < f.ts - t <= 3 * iv and sign == np.sign(f.qty)), "")
            diffs.append({"kind": "fill", "ts": iso(f.ts), "live": [f.qty, f.price],
                          "backtest": None, "cause": why or _cause(
                              rejects, f.ts, iv, "no such fill in the backtest")})
            continue
        used.add(k)
        b = bt_fills[k]
        dq = abs(f.qty - b[1])
        qty_diff = max(qty_diff, dq)
        px_diff = max(px_diff, abs(f.price / b[2] - 1.0))
        # the venue trades whole lot steps: the position is off by up to a step, and the
        # account (equity, hence the next order's size) by its tiny price effect
        part = f"partial fill: {partial[f.client_id]}" if f.client_id in partial else ""
        if part and dq > 1e-12:
            parts.append(iso(f.ts))
            rest_of.append((f.ts, float(np.sign(f.qty))))
        if dq <= 2.0 * step + QTY_REL_TOL * abs(b[1]) and abs(f.price / b[2] - 1.0) <= \
                PRICE_REL_TOL:
            matched += 1
            if dq > 1e-12:
                diffs.append({"kind": "fill_qty", "ts": iso(f.ts), "live": f.qty,
                              "backtest": b[1], "cause": part or f"lot size: the venue trades "
                                                                 f"multiples of {step:g} base"})
        else:
            diffs.append({"kind": "fill", "ts": iso(f.ts), "live": [f.qty, f.price],
                          "backtest": [b[1], b[2]],
                          "cause": part if part and dq > step else
                          "price differs (latency: another bar's price)"
                          if dq <= step else f"quantity differs: the account differs since the "
                          f"rebalance-band difference at {edge[0]}" if edge else
                          f"quantity differs: the account differs since the partial fill at "
                          f"{parts[0]}" if parts else "quantity differs"})
    for j, b in enumerate(bt_fills):
        if j not in used:
            why = _band_edge(rec, bars, index.get(b[0], 0) - 1, band, step)
            diffs.append({"kind": "fill", "ts": iso(b[0]), "live": None, "backtest": [b[1], b[2]],
                          "cause": why or _cause(rejects, b[0] - iv, iv, "not filled live")})
    # funding PAID (+; received -), as the backtest, the store and the events count it
    live_funding = sum(f.payment for f in store.funding(run_id))
    bt_funding = float(bt.metrics["funding"])
    final, _ = daemon.equity()
    bt_final = float(bt.metrics["final_equity"])
    rel = abs(final / bt_final - 1.0) if bt_final else math.inf
    dup = sum(n - 1 for n in venue["by_client"].values() if n > 1)
    stored = {f.fill_id for f in store.fills(run_id)}
    lost = sum(1 for s, tid in venue["trades"] if f"{s}-{tid}" not in stored)
    our_qty = float(daemon.broker.pos[0, ac.P_QTY])
    pos_equal = abs(our_qty - venue["qty"]) <= 1e-9
    venue_rel = abs(venue["equity"] / final - 1.0) if final else math.inf
    liq_live = sum(1 for f in live_fills if f.liquidation)
    liq_bt = sum(1 for b in bt_fills if b[3])
    parity = (dec_mismatch == 0 and matched == len(live_fills) == len(bt_fills)
              and rel <= EQUITY_TOL and dup == 0 and lost == 0 and pos_equal
              and liq_live == liq_bt)
    return {
        "parity": parity, "duplicate_orders": dup, "lost_fills": lost, "equity_rel_diff": rel,
        "equity_cause": f"the account differs from the rebalance-band difference at {edge[0]} "
                        "on (another position, its fees and slippage)" if edge else
                        f"the account differs from the partial fill at {parts[0]} on (the "
                        "venue executed part of the order; the rest was not held)" if parts
                        else "",
        "final_equity": {"live": final, "backtest": bt_final, "venue": venue["equity"],
                         "live_vs_venue_rel": venue_rel},
        "decisions": {"bars": len(index), "live": len(decs), "mismatched": dec_mismatch},
        "fills": {"live": len(live_fills), "live_trades": len(trades),
                  "partial": len(partial), "backtest": len(bt_fills), "matched": matched,
                  "max_qty_diff": qty_diff, "max_price_rel_diff": px_diff},
        "funding": {"live": live_funding, "backtest": bt_funding,
                    "payments": len(store.funding(run_id))},
        "liquidations": {"live": liq_live, "backtest": liq_bt},
        "positions": {"live": our_qty, "venue": venue["qty"], "equal": pos_equal},
        "venue_orders": venue["orders"], "rejects": len(rejects),
        "events": dict(Counter(e.kind for e in events)),
        "differences": diffs[:200],
    }


def _per_order(trades: list[Any]) -> list[Any]:
    """The live trades as fills per order: the trades of one client id at one bar summed
    (quantity, fee, slippage; the volume-weighted price). Liquidations stay one each."""
    out: list[Any] = []
    by_order: dict[tuple[str, int], int] = {}
    for t in trades:
        k = (t.client_id, t.ts)
        if t.liquidation or not t.client_id or k not in by_order:
            if not t.liquidation and t.client_id:
                by_order[k] = len(out)
            out.append(SimpleNamespace(fill_id=t.fill_id, client_id=t.client_id, ts=t.ts,
                                       qty=t.qty, price=t.price, fee=t.fee,
                                       slippage=t.slippage, liquidation=t.liquidation))
            continue
        f = out[by_order[k]]
        qty = f.qty + t.qty
        f.price = (f.qty * f.price + t.qty * t.price) / qty if qty else t.price
        f.qty, f.fee, f.slippage = round(qty, 12), f.fee + t.fee, f.slippage + t.slippage
    return out


def _band_edge(rec: np.ndarray, bars: Bars, t: int, band: float, step: float) -> str:
    """The cause of a rebalance one side made and the other did not, when the backtest's
    order at decision bar `t` was within two lot steps' notional of the rebalance band: the
    venue trades whole lot steps, so the live position (hence the order the band is
    compared with) is off by up to that much, and a tiny difference decides a whole order."""
    if t < 0 or step <= 0.0:
        return ""
    eq = float(rec[t, eg.R_EQUITY])
    mark = float(bars["mark_close"][t]) if bars.has("mark_close") else float(bars.close[t])
    allowed = float(rec[t, eg.R_ALLOWED_LEV]) * eq
    held = float(rec[t, eg.R_QTY]) * mark
    order = abs(allowed - held)
    edge = band * max(abs(allowed), abs(held))
    lots = 2.0 * step * mark
    if allowed == 0.0 or held == 0.0 or allowed * held < 0.0 or abs(order - edge) > lots:
        return ""
    return (f"rebalance band edge: the backtest's order at the decision close was "
            f"{order:,.2f} quote against a band of {edge:,.2f} ({order - edge:+,.2f}), within "
            f"two lot steps' notional ({lots:,.2f}) of it; the live position, in whole lots of "
            f"{step:g}, fell on the other side")


def _cause(rejects: list[Any], ts: int, iv: int, default: str) -> str:
    near = [e for e in rejects if abs(e.ts - ts) <= 2 * iv]
    return f"order not placed: {near[0].message}" if near else default


def drill_command(
    ctx: typer.Context,
    dataset: Annotated[list[str], typer.Argument(
        help="dataset directory or scenario, or exchange files (klines CSV \\[funding CSV])")],
    strategy: Annotated[str | None, typer.Option("--strategy", help="default: config "
                                                 "run.strategy")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="k=v (repeatable)")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="default: config run.preset")]
    = None,
    speed: Annotated[float, typer.Option("--speed", help="0 = lockstep, as fast as it goes; "
                                         "N = both at N x real time")] = 0.0,
    faults: Annotated[str | None, typer.Option("--faults", help="emulator fault profile: none, "
                                               "flaky, lossy-orders, partial-fills or a TOML file")] = None,
    wallet: Annotated[float | None, typer.Option("--wallet", help="default: config run.wallet")]
    = None,
    feed: Annotated[str, typer.Option("--feed", help="where the daemon's bars come from: "
                                      "dataset (the replayed bars) or exchange (the daemon's "
                                      "exchange feed over the emulator's REST and websockets; "
                                      "needs --speed N > 0)")] = "dataset",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report as JSON "
                                                  "('-' = stdout)")] = None,
    tiers: TiersOption = None,
) -> None:
    """Trade DATASET in live mode against the local emulator (real ccxt), backtest the same
    data, print the parity report. Exit 0 when parity holds, 1 when it does not."""
    from bot.emulator.faults import load_profile

    out = check_output(json_out, "--json")
    fees, cfg = _fees((ctx.obj or {}).get("config") if ctx.obj else None)
    rc = cfg.run
    strat, preset_name, _, w, speed = run_choices(cfg, strategy, param, preset, wallet, speed)
    _check_feed(feed, speed)
    profile = load_profile(faults)
    bars = load_data(dataset).bars
    if len(bars) < 2:
        raise LiqbotError(f"drill: {dataset[0]} has fewer than 2 bars")
    lc = cfg.live
    live = LiveSettings(leverage=lc.leverage, margin_mode=lc.margin_mode,
                        max_order_notional=lc.max_order_notional or math.inf,
                        max_day_notional=lc.max_day_notional or math.inf,
                        reconcile_s=rc.reconcile_every_s, attempts=lc.order_attempts,
                        use_ws=lc.user_stream)
    settings = RunSettings(wallet=w, fills=cfg.fills, fees=fees)
    logging.getLogger("liqbot").setLevel(logging.ERROR)
    logging.getLogger("ccxt").setLevel(logging.ERROR)
    report = asyncio.run(run_drill(bars, strat, preset_name, settings, speed, profile, live,
                                   feed=feed, tiers=tiers))
    print_report(report, stderr=is_stdout(json_out))   # `--json -`: stdout holds only JSON
    if json_out is not None:
        write_output(out, dumps(report), "--json")
    raise typer.Exit(0 if report["parity"] else 1)


def print_report(r: dict[str, Any], stderr: bool = False) -> None:
    """The parity report as text: on stdout, or on stderr (`stderr`) when stdout carries
    the JSON report (`--json -`), so the JSON can be piped into a parser."""
    con = console(stderr=stderr)
    fe = r["final_equity"]
    con.print(f"[bold]drill[/] {r['symbol']} {r['from']} .. {r['to']}: {r['strategy']}, "
              f"preset {r['preset']}, {'lockstep' if r['lockstep'] else 'speed ' + str(r['speed'])}"
              f"{', exchange feed' if r.get('feed') == 'exchange' else ''}, {r['bars']} bars in "
              f"{r['duration_s']:.1f} s")
    con.print(f"decisions {r['decisions']['bars'] - r['decisions']['mismatched']}/"
              f"{r['decisions']['bars']} identical; fills live {r['fills']['live']} / backtest "
              f"{r['fills']['backtest']} (matched {r['fills']['matched']}, max qty diff "
              f"{r['fills']['max_qty_diff']:.6g}, max price diff "
              f"{r['fills']['max_price_rel_diff']:.2e})")
    f = {k: round(v, 4) + 0.0 for k, v in r["funding"].items()}     # never "-0.0000"
    con.print(f"funding paid live {f['live']:,.4f} / backtest {f['backtest']:,.4f}; "
              f"liquidations {r['liquidations']['live']} / {r['liquidations']['backtest']}")
    con.print(f"final equity live {fe['live']:,.4f} / backtest {fe['backtest']:,.4f} / venue "
              f"{fe['venue']:,.4f} (live vs backtest {r['equity_rel_diff']:.2e})"
              + (f": {r['equity_cause']}" if r.get("equity_cause") else ""))
    con.print(f"orders {r['orders']} decided, {r['venue_orders']} at the venue, duplicates "
              f"{r['duplicate_orders']}, lost fills {r['lost_fills']}, rejects {r['rejects']}; "
              f"faults injected {r['faults_injected'] or 'none'}")
    xf = r.get("exchange_feed")
    if xf:
        con.print(f"exchange feed: {xf['bars']}/{xf['dataset_bars']} bars reached the daemon "
                  f"({xf['stream']} from the streams, {xf['rest']} by REST backfill, "
                  f"{xf['missing']} missing), {xf['late']} later than a bar, max delay "
                  f"{xf['max_delay_ms'] / 1000:.1f} s simulated"
                  + (f"; silent liquidation stream = 0 for {', '.join(xf['zero_filled'])}"
                     if xf["zero_filled"] else "")
                  + (f"; not bar by bar from the feed: {', '.join(xf['not_per_bar'])}"
                     if xf["not_per_bar"] else ""))
    for d in r["differences"][:20]:
        con.print(f"  {d['kind']} {d['ts']}: live {d['live']} backtest {d['backtest']} "
                  f"-- {d['cause']}")
    con.print("[bold green]parity holds[/]" if r["parity"] else "[bold red]parity fails[/]")


def register(app: typer.Typer) -> None:
    app.command("drill", short_help="Live mode against the local emulator (real ccxt) vs the "
                "backtest of the same data: parity report.")(drill_command)
