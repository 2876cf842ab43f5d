"""Market data served from datasets up to the simulated now, never beyond (no lookahead).

Per symbol, bar i covers [ts_i, ts_i + interval). At simulated time `now`:
- bars with ts_i + interval <= now are CLOSED and served in full;
- the bar containing `now` is IN PROGRESS: only its open is known, so it is served flat
  (open = high = low = close = open, volume 0) and the venue's last price and mark are its
  `open` and `mark_open` (missing mark columns: the trade prices stand in);
- before the first bar: nothing; after the last bar's close: the last close.
Funding settles at the open of a bar that carries a `funding_rate` (as the paper broker and
the backtester do) and is published from then on; open interest and long/short ratios are
states known at a bar's close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bot.data.bars import Bars
from bot.errors import LiqbotError
from bot.mechanics.fills import window_inputs


@dataclass
class SymbolData:
    """One symbol's columns plus the fill-model window known at each bar's close."""

    bars: Bars
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    quote_volume: np.ndarray
    mark_open: np.ndarray
    mark_high: np.ndarray
    mark_low: np.ndarray
    mark_close: np.ndarray
    funding: np.ndarray
    win_vol: np.ndarray
    win_sig: np.ndarray
    win_liq: np.ndarray
    liq_long: np.ndarray
    liq_short: np.ndarray

    @property
    def symbol(self) -> str:
        return self.bars.symbol


def _col(b: Bars, name: str, fallback: np.ndarray) -> np.ndarray:
    if b.has(name):
        v = np.asarray(b[name], dtype=float)
        return np.where(np.isfinite(v), v, fallback)
    return fallback


def symbol_data(b: Bars, window_bars: int) -> SymbolData:
    o, h, lo, c = (np.asarray(b[k], dtype=float) for k in ("open", "high", "low", "close"))
    vol = np.asarray(b["volume"], dtype=float)
    qv = _col(b, "quote_volume", vol * c)
    ll = _col(b, "liq_long_notional", np.zeros(len(b)))
    ls = _col(b, "liq_short_notional", np.zeros(len(b)))
    wv, ws, wl = window_inputs(c, qv, ll + ls, window_bars)
    fund = np.asarray(b["funding_rate"], dtype=float) if b.has("funding_rate") else \
        np.full(len(b), np.nan)
    return SymbolData(b, np.asarray(b.ts, dtype=np.int64), o, h, lo, c, vol, qv,
                      _col(b, "mark_open", o), _col(b, "mark_high", h), _col(b, "mark_low", lo),
                      _col(b, "mark_close", c), fund, wv, ws, wl, ll, ls)


class Market:
    """Every symbol of the replay; all datasets share one bar interval."""

    def __init__(self, bars: list[Bars], window_bars: int = 60) -> None:
        if not bars:
            raise LiqbotError("emulator: no dataset")
        ivs = {b.interval_ms for b in bars}
        if len(ivs) != 1:
            raise LiqbotError(f"emulator: datasets must share one bar interval, got {sorted(ivs)}")
        if len({b.symbol for b in bars}) != len(bars):
            raise LiqbotError("emulator: two datasets of the same symbol")
        self.interval_ms = ivs.pop()
        self.symbols = {b.symbol: symbol_data(b, window_bars) for b in bars}
        self.start_ms = min(b.start_ms for b in bars)
        self.end_ms = max(b.end_ms for b in bars)

    def get(self, symbol: str) -> SymbolData | None:
        return self.symbols.get(symbol)

    # --- where the clock is ----------------------------------------------------------------
    def closed(self, d: SymbolData, now: int) -> int:
        """Number of closed bars at `now` (bars 0 .. n-1 are closed)."""
        return int(np.searchsorted(d.ts + self.interval_ms, now, side="right"))

    def current(self, d: SymbolData, now: int) -> int:
        """Index of the bar in progress at `now`, or -1 (before the first / after the last)."""
        i = int(np.searchsorted(d.ts, now, side="right")) - 1
        if i < 0 or now >= d.ts[i] + self.interval_ms:
            return -1
        return i

    def last_price(self, d: SymbolData, now: int) -> float:
        """The venue's last trade price: the open of the bar in progress, else the last close."""
        i = self.current(d, now)
        if i >= 0:
            return float(d.open[i])
        k = self.closed(d, now)
        return float(d.close[k - 1]) if k else float(d.open[0])

    def mark(self, d: SymbolData, now: int) -> float:
        i = self.current(d, now)
        if i >= 0:
            return float(d.mark_open[i])
        k = self.closed(d, now)
        return float(d.mark_close[k - 1]) if k else float(d.mark_open[0])

    def window(self, d: SymbolData, now: int) -> tuple[float, float, float]:
        """Fill-model window (V_w, sigma_w, L_w) known at the last close before `now`."""
        k = self.closed(d, now)
        if k == 0:
            return 0.0, 0.0, 0.0
        return float(d.win_vol[k - 1]), float(d.win_sig[k - 1]), float(d.win_liq[k - 1])

    def last_funding(self, d: SymbolData, now: int) -> tuple[float, int]:
        """(rate, settlement ms) of the last settlement at or before `now`, or (0, 0)."""
        k = int(np.searchsorted(d.ts, now, side="right"))
        idx = np.flatnonzero(np.isfinite(d.funding[:k]))
        if len(idx) == 0:
            return 0.0, 0
        return float(d.funding[idx[-1]]), int(d.ts[idx[-1]])

    def next_funding_ms(self, d: SymbolData, now: int) -> int:
        k = int(np.searchsorted(d.ts, now, side="right"))
        idx = np.flatnonzero(np.isfinite(d.funding[k:]))
        if len(idx):
            return int(d.ts[k + idx[0]])
        step = 8 * 3_600_000
        return (now // step + 1) * step

    # --- REST rows ------------------------------------------------------------------------
    def select(self, d: SymbolData, now: int, start: int | None, end: int | None,
               limit: int) -> np.ndarray:
        """Indices of bars opened by `now` within [start, end], at most `limit` (Binance:
        from `start` forwards, else the latest ones)."""
        k = int(np.searchsorted(d.ts, now, side="right"))
        lo = 0 if start is None else int(np.searchsorted(d.ts, start, side="left"))
        hi = k if end is None else min(k, int(np.searchsorted(d.ts, end, side="right")))
        if hi <= lo:
            return np.zeros(0, dtype=np.int64)
        if start is not None:
            return np.arange(lo, min(hi, lo + limit))
        return np.arange(max(lo, hi - limit), hi)

    def kline_row(self, d: SymbolData, i: int, now: int, mark: bool) -> list[object]:
        t = int(d.ts[i])
        iv = self.interval_ms
        if mark:
            o, h, lo, c = d.mark_open[i], d.mark_high[i], d.mark_low[i], d.mark_close[i]
        else:
            o, h, lo, c = d.open[i], d.high[i], d.low[i], d.close[i]
        if now < t + iv:                     # in progress: only the open is known
            h = lo = c = o
            v = qv = tb = tbq = 0.0
            n = 0
        elif mark:
            v = qv = tb = tbq = 0.0
            n = 0
        else:
            b = d.bars
            v, qv = float(d.volume[i]), float(d.quote_volume[i])
            tb = float(b["taker_buy_volume"][i]) if b.has("taker_buy_volume") else 0.0
            tbq = float(b["taker_buy_quote_volume"][i]) if b.has("taker_buy_quote_volume") \
                else 0.0
            n = int(b["trades"][i]) if b.has("trades") else 0
        return [t, _s(o), _s(h), _s(lo), _s(c), _s(v), t + iv - 1, _s(qv), n, _s(tb), _s(tbq),
                "0"]

    def state_rows(self, d: SymbolData, column: str, now: int, period_ms: int,
                   start: int | None, end: int | None, limit: int) -> list[tuple[int, float]]:
        """(period timestamp, value of `column` at the bar closing there) for periods that
        ended by `now`; NaN values skipped."""
        b = d.bars
        if not b.has(column):
            return []
        closes = d.ts + self.interval_ms
        vals = np.asarray(b[column], dtype=float)
        mask = (closes % period_ms == 0) & (closes <= now) & np.isfinite(vals)
        if start is not None:
            mask &= closes >= start
        if end is not None:
            mask &= closes <= end
        idx = np.flatnonzero(mask)
        idx = idx[:limit] if start is not None else idx[-limit:]
        return [(int(closes[i]), float(vals[i])) for i in idx]


def _s(x: float) -> str:
    """Binance sends decimals as strings."""
    return f"{float(x):.8f}".rstrip("0").rstrip(".") if x == x else "0"
