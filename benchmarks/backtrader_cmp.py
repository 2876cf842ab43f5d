"""backtrader on the benchmark's workload: the same SMA entries and exits, next-open fills,
0.05% fee, long-only, all in.

backtrader is an event-driven Python loop (tens of thousands of bars per second), so it
runs on the first `n` bars of the year and its throughput is taken as bars per second:
its cost per bar does not depend on the length of the run. The signals are fed to it as
two extra data lines computed beforehand, as they are for liqbot's loop and vectorbt, so
only the portfolio loops are compared. `bars_per_second` returns (bars/s, closed trades)
so the caller can check that backtrader traded the signals it was given.
"""

from __future__ import annotations

import time

import numpy as np


def bars_per_second(ts: np.ndarray, opn: np.ndarray, high: np.ndarray, low: np.ndarray,
                    close: np.ndarray, entries: np.ndarray, exits: np.ndarray,
                    fee: float = 0.0005, cash: float = 100_000.0) -> tuple[float, int]:
    """Run backtrader over the given bars and signals; (bars/s of `cerebro.run`, trades)."""
    import backtrader as bt
    import pandas as pd

    class SignalData(bt.feeds.PandasData):  # type: ignore[misc]
        lines = ("entry", "exit")
        params = (("entry", -1), ("exit", -1))

    class Signals(bt.Strategy):  # type: ignore[misc]
        """Buy all in at the next open on an entry, close at the next open on an exit."""

        def __init__(self) -> None:
            self.closed = 0

        def notify_trade(self, trade: bt.Trade) -> None:
            if trade.isclosed:
                self.closed += 1

        def next(self) -> None:
            d = self.datas[0]
            if not self.position and d.entry[0] > 0.0:
                # sized on this close with a 5% cushion, as liqbot's sma_cross (0.95)
                self.buy(size=0.95 * self.broker.getcash() / d.close[0])
            elif self.position and d.exit[0] > 0.0:
                self.close()

    frame = pd.DataFrame({
        "open": opn, "high": high, "low": low, "close": close,
        "volume": np.zeros(len(close)), "entry": entries.astype(float),
        "exit": exits.astype(float)},
        index=pd.to_datetime(ts, unit="ms", utc=True).tz_localize(None))
    cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=True)
    cerebro.adddata(SignalData(dataname=frame))
    cerebro.addstrategy(Signals)
    cerebro.broker.setcash(cash)
    cerebro.broker.setcommission(commission=fee)
    t = time.perf_counter()
    strat = cerebro.run()[0]
    elapsed = time.perf_counter() - t
    return len(close) / elapsed, int(strat.closed)
