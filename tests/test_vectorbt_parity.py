"""Parity with vectorbt (dev extra) on a month of real 1m bars: SMA crossover, long/flat,
0.95x exposure, taker fees, no leverage, no funding, no slippage, risk off.

Entry quantities are the ones liqbot decided (sized at the signal bar's close, filled at the
next open); vectorbt then fills them at the same opens and does its own accounting. Trades
and the equity curve must agree to 1e-9 relative.
"""

import numpy as np
import pytest

from backtests import engine as eg
from backtests.runner import RunSettings, prepare, run
from bot.config import FillsConfig
from bot.data import binance_vision as bv
from bot.mechanics.brackets import shipped
from bot.mechanics.fees import VenueFees
from bot.risk.policy import off_policy
from strategies.sma_cross import SmaCross
from tests.conftest import shared_file

vbt = pytest.importorskip("vectorbt", reason="vectorbt is a dev extra (pip install -e '.[dev]')")


def liqbot_and_vectorbt():
    path = shared_file("binance_um", "klines_1m", "alts", "LTCUSDT-1m-2026-02.csv.gz")
    bars = bv.kline_bars(bv.load_file(path))
    settings = RunSettings(wallet=10_000.0, fills=FillsConfig(impact_coef=0.0,
                                                              half_spread_bps=0.0),
                           fees=VenueFees(0.0, 0.0005, 0.0), band=1e18)
    br = shipped("binance", "BTCUSDT")
    inputs = prepare(bars, br, settings)
    res = run(inputs, SmaCross(), off_policy(), br, settings, "parity")
    n = len(bars)
    tr = res.trades
    buys = tr[tr[:, 2] > 0]
    entries = np.zeros(n, dtype=bool)
    exits = np.zeros(n, dtype=bool)
    size = np.full(n, np.nan)
    entries[buys[:, 0].astype(int)] = True
    size[buys[:, 0].astype(int)] = buys[:, 2]
    exits[tr[tr[:, 2] < 0][:, 0].astype(int)] = True
    pf = vbt.Portfolio.from_signals(
        close=bars.close, entries=entries, exits=exits, size=size, size_type="amount",
        price=bars["open"], fees=0.0005, init_cash=10_000.0, direction="longonly",
        accumulate=False)
    return bars, res, pf


def test_identical_trades_and_equity():
    bars, res, pf = liqbot_and_vectorbt()
    orders = pf.orders.records_readable
    ours = res.trades
    assert len(ours) > 100 and len(orders) == len(ours)
    np.testing.assert_array_equal(orders["Timestamp"].to_numpy(), ours[:, 0].astype(int))
    np.testing.assert_allclose(orders["Size"].to_numpy(), np.abs(ours[:, 2]), rtol=1e-12)
    np.testing.assert_allclose(orders["Price"].to_numpy(), ours[:, 3], rtol=1e-15)
    np.testing.assert_allclose(orders["Fees"].to_numpy(), ours[:, 4], rtol=1e-9)
    np.testing.assert_allclose(pf.value().to_numpy(), res.records[:, eg.R_EQUITY], rtol=1e-9)
    assert res.metrics["liquidations"] == 0
