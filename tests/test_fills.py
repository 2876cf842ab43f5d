import numpy as np
import pytest

from bot.mechanics.fills import limit_fills, market_fill_price, market_slippage, window_inputs


def test_square_root_law_by_hand():
    # 1M order into 400M of window volume, sigma 1%: 0.7 * 0.01 * sqrt(1/400) = 0.00035
    s = market_slippage(1e6, 4e8, 0.01, 0.0, 0.7, 0.00005, 2.0, 0.05)
    assert s == pytest.approx(0.00005 + 0.00035)
    # four times the size: twice the impact
    s4 = market_slippage(4e6, 4e8, 0.01, 0.0, 0.7, 0.0, 2.0, 0.05)
    assert s4 == pytest.approx(0.0007)
    # liquidation flow equal to half the volume thins the book: x (1 + 2 * 0.5)
    sl = market_slippage(4e6, 4e8, 0.01, 2e8, 0.7, 0.0, 2.0, 0.05)
    assert sl == pytest.approx(0.0014)
    assert market_slippage(1e12, 1.0, 1.0, 0.0, 0.7, 0.0, 2.0, 0.05) == 0.05   # capped
    assert market_fill_price(1.0, 100.0, 0.001) == pytest.approx(100.1)
    assert market_fill_price(-1.0, 100.0, 0.001) == pytest.approx(99.9)


def test_limit_orders_fill_only_through():
    assert not limit_fills(1.0, 100.0, 100.0, 105.0)     # touched, not through
    assert limit_fills(1.0, 100.0, 99.9, 105.0)
    assert not limit_fills(-1.0, 105.0, 100.0, 105.0)
    assert limit_fills(-1.0, 105.0, 100.0, 105.1)


def test_window_inputs_are_causal_and_match_numpy():
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, 300)))
    qv = rng.uniform(1e6, 2e6, 300)
    liq = rng.uniform(0, 1e5, 300)
    v, s, lq = window_inputs(close, qv, liq, 60)
    t = 200
    r = np.diff(np.log(close))[t - 60:t]    # returns ending at bar t
    assert v[t] == pytest.approx(qv[t - 59:t + 1].sum())
    assert lq[t] == pytest.approx(liq[t - 59:t + 1].sum())
    assert s[t] == pytest.approx(r.std() * np.sqrt(60), rel=1e-6)
    v2, s2, _ = window_inputs(close[:t + 1], qv[:t + 1], liq[:t + 1], 60)
    assert v2[t] == v[t] and s2[t] == s[t]          # later bars change nothing
