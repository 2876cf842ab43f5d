"""Prometheus metrics of a running daemon, read from its memory at scrape time.

A custom collector (no per-bar bookkeeping on the hot path): every scrape computes the
gauges from `Daemon` state (account, positions, last signals and decisions) and reads the
counters the daemon keeps. The counters count what this process did (`process_count`: 0
at each start, also of a resumed run), as Prometheus expects; the run's totals are in
`/api/status` (docs/daemon.md, "Control"). Names and units are listed in docs/operations.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.mechanics import account as ac
from bot.risk import engine as en
from bot.risk.reasons import REASONS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ErrorCounter(logging.Handler):
    """Counts ERROR-and-above log records of the liqbot loggers (`liqbot_errors_total`)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


class DaemonCollector(Collector):
    """Gauges and counters of one `bot.runtime.daemon.Daemon` (and its alerts, if any)."""

    def __init__(self, daemon: Any, alerts: Any = None, errors: ErrorCounter | None = None
                 ) -> None:
        self.d = daemon
        self.alerts = alerts
        self.errors = errors

    def collect(self) -> Iterator[Metric]:
        d = self.d
        b = d.broker
        eq, upnl = d.equity()
        yield _gauge("liqbot_equity_quote", "account equity at the last marks (quote)", eq)
        yield _gauge("liqbot_wallet_quote", "wallet balance (quote)", float(b.acct[ac.A_WALLET]))
        yield _gauge("liqbot_unrealized_pnl_quote", "unrealised PnL (quote)", upnl)
        yield _gauge("liqbot_halted", "operator kill switch engaged (1) or not (0)",
                     float(d.halted))
        lev = GaugeMetricFamily("liqbot_leverage", "position notional / equity per symbol "
                                "(main + hedge legs, absolute)", labels=["symbol"])
        notional = GaugeMetricFamily("liqbot_position_notional_quote",
                                     "signed position notional at the mark (quote)",
                                     labels=["symbol", "slot"])
        dist_pct = GaugeMetricFamily("liqbot_liquidation_distance_pct",
                                     "distance from the mark to the position's liquidation "
                                     "price, % of the mark", labels=["symbol", "slot"])
        dist_atr = GaugeMetricFamily("liqbot_liquidation_distance_atr",
                                     "distance from the mark to the liquidation price, ATRs",
                                     labels=["symbol", "slot"])
        crowd = GaugeMetricFamily("liqbot_crowding", "crowding score per side (0..1)",
                                  labels=["symbol", "side"])
        state = GaugeMetricFamily("liqbot_risk_state", "risk state of the last decision: "
                                  "0 ACTIVE, 1 REDUCING, 2 HALTED", labels=["symbol"])
        reason = GaugeMetricFamily("liqbot_risk_reason_active", "reason bit set in the last "
                                   "decision (1) or not (0)", labels=["symbol", "reason"])
        lag = GaugeMetricFamily("liqbot_feed_lag_seconds", "feed clock minus the close of the "
                                "symbol's last processed bar", labels=["symbol"])
        bars = CounterMetricFamily("liqbot_bars", "bars processed per symbol", labels=["symbol"])
        now = d.feed.now_ms()
        for s, x in d.state.items():
            gross = 0.0
            for slot in (2 * x.index, 2 * x.index + 1):
                qty = float(b.pos[slot, ac.P_QTY])
                mark = float(b.marks[slot])
                gross += abs(qty * mark)
                if qty == 0.0:
                    continue
                notional.add_metric([s, str(slot)], qty * mark)
                lp = float(ac.liquidation_price(b.acct, b.pos, slot, b.marks, b.floor, b.cap,
                                                b.mmr, b.cum))
                if np.isfinite(lp) and lp > 0.0 and mark > 0.0:
                    dist_pct.add_metric([s, str(slot)], abs(mark - lp) / mark * 100.0)
                    if np.isfinite(x.atr) and x.atr > 0.0:
                        dist_atr.add_metric([s, str(slot)], abs(mark - lp) / x.atr)
            lev.add_metric([s], gross / eq if eq > 0 else 0.0)
            for side, k in (("long", en.S_CROWD_LONG), ("short", en.S_CROWD_SHORT)):
                v = float(x.last_sig[k])
                if np.isfinite(v):
                    crowd.add_metric([s, side], v)
            if x.last_state >= 0:
                state.add_metric([s], float(x.last_state))
                for name, bit in REASONS.items():
                    reason.add_metric([s, name], float(bool(x.last_reasons & bit)))
            if x.last_ts >= 0:
                lag.add_metric([s], max(0.0, (now - x.last_ts - d.feed.interval_ms) / 1000.0))
            bars.add_metric([s], float(d.process_count(f"bars:{s}")))
        yield from (lev, notional, dist_pct, dist_atr, crowd, state, reason, lag, bars)
        c = d.process_count
        yield _counter("liqbot_orders", "orders sent (intents)", c("orders"))
        yield _counter("liqbot_fills", "order fills", c("fills"))
        yield _counter("liqbot_liquidations", "liquidation fills", c("liquidations"))
        yield _counter("liqbot_rejects", "orders the venue refused", c("rejects"))
        yield _counter("liqbot_stale_feed", "stale-feed watchdog trips", c("stale"))
        yield _counter("liqbot_skipped_bars", "malformed bars skipped", c("skipped"))
        yield _counter("liqbot_strategy_errors", "bars on which the strategy raised or gave "
                       "a non-finite target", c("strategy_errors"))
        yield _counter("liqbot_errors", "ERROR log records", self.errors.count if self.errors
                       else 0)
        if self.alerts is not None:
            sent = CounterMetricFamily("liqbot_alerts", "alerts by outcome",
                                       labels=["outcome"])
            for outcome, n in self.alerts.counts.items():
                sent.add_metric([outcome], float(n))
            yield sent


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=float(value))


def registry(daemon: Any, alerts: Any = None, errors: ErrorCounter | None = None
             ) -> CollectorRegistry:
    """A private registry holding only the daemon's collector (no process/GC collectors:
    the figures are the daemon's, and scrapes stay cheap)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DaemonCollector(daemon, alerts, errors))
    return reg


def scrape(reg: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of `reg`."""
    return generate_latest(reg)
