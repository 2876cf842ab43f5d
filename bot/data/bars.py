"""Columnar bar and trade containers, one symbol each.

Units (documented once here, relied on everywhere):
- `ts`: int64 milliseconds UTC, bar OPEN time (Binance `open_time`); a bar covers
  [ts, ts + interval_ms).
- prices (open/high/low/close, mark_*, index_close, liquidation prices): quote per base
  (USDT per BTC).
- `volume`, `taker_buy_volume`, `open_interest`: base quantity (BTC).
- `quote_volume`, `taker_buy_quote_volume`, `open_interest_value`, `liq_*_notional`:
  quote notional (USDT).
- `trades`: count of trades in the bar.
- `funding_rate`: rate per funding interval (0.0001 = 0.01%), present only on the bar whose
  interval contains a settlement, NaN elsewhere.
- `premium_close`: premium index (fraction, (mark-ish - index) / index) at bar close.
- `long_short_ratio`, `top_long_short_ratio`: accounts ratio, dimensionless.
- `funding_rate_avg`: OI-weighted funding across exchanges (vendor series), rate per 8h
  (0.0001 = 0.01%); a STATE column (last completed vendor bucket, as of the bar's close),
  unlike the event column `funding_rate`.
- `funding_rate_live`: one venue's running (not yet settled) funding rate as a vendor samples
  it, last sample of the last completed bucket, rate per 8h; state; not the settled rate.
- `oi_coin_margin_value`: coin-margined open interest summed over exchanges, quote (USD); state.
- `oi_stablecoin`: stablecoin-margined open interest in the vendor's undocumented unit; state;
  use only as a relative change (x[t] / x[t-w] - 1).
- `agg_taker_buy_notional`, `agg_taker_sell_notional`: vendor taker buy / sell notional (USD)
  summed over a whole vendor bucket (e.g. 4h), an EVENT on the bar where the bucket becomes
  known (see docs/data.md); not one bar's flow on a finer grid.
- `liq_*_notional` from a vendor bucket file are likewise the whole bucket's sum (docs/data.md).
- `filled`: True for bars synthesised by gap filling (flat OHLC at the previous close,
  zero volume).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

REQUIRED_COLUMNS: tuple[str, ...] = ("ts", "open", "high", "low", "close", "volume")
#: Present in exchange-native klines (Binance Vision); absent from ccxt's 6-field OHLCV.
FLOW_COLUMNS: tuple[str, ...] = (
    "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume",
)
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "mark_open", "mark_high", "mark_low", "mark_close", "index_close", "premium_close",
    "funding_rate", "open_interest", "open_interest_value", "long_short_ratio",
    "top_long_short_ratio", "liq_long_notional", "liq_short_notional",
    "funding_rate_avg", "funding_rate_live", "oi_coin_margin_value", "oi_stablecoin",
    "agg_taker_buy_notional", "agg_taker_sell_notional", "filled",
)
ALL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + FLOW_COLUMNS + OPTIONAL_COLUMNS
_INT_COLUMNS = frozenset({"ts", "trades"})
_BOOL_COLUMNS = frozenset({"filled"})

MINUTE_MS = 60_000


def column_dtype(name: str) -> np.dtype:
    """The canonical dtype of a bar column."""
    if name in _INT_COLUMNS:
        return np.dtype(np.int64)
    if name in _BOOL_COLUMNS:
        return np.dtype(np.bool_)
    return np.dtype(np.float64)


@dataclass(frozen=True)
class Bars:
    """OHLCV bars of one symbol at one interval, stored column by column.

    Construction checks that required columns exist, names are known and lengths agree;
    content checks (monotonic time, OHLC consistency) live in `bot.data.validate`.

    Columns are read-only (a writeable array given is wrapped in a read-only view): bars
    read from a dataset, generated or aggregated are the same numba argument types, so a
    kernel compiled for one serves the others (and one array may back several columns).
    """

    symbol: str
    interval_ms: int
    columns: Mapping[str, np.ndarray] = field(repr=False)

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in self.columns]
        if missing:
            raise ValueError(f"Bars: missing required column(s) {missing}")
        unknown = [c for c in self.columns if c not in ALL_COLUMNS]
        if unknown:
            raise ValueError(f"Bars: unknown column(s) {unknown}; known: {list(ALL_COLUMNS)}")
        if self.interval_ms <= 0:
            raise ValueError(f"Bars: interval_ms must be positive, got {self.interval_ms}")
        n = len(self.columns["ts"])
        cols: dict[str, np.ndarray] = {}
        for name in ALL_COLUMNS:  # canonical order
            if name not in self.columns:
                continue
            arr = np.ascontiguousarray(self.columns[name], dtype=column_dtype(name))
            if arr.ndim != 1 or len(arr) != n:
                raise ValueError(f"Bars: column {name} has shape {arr.shape}, expected ({n},)")
            if arr.flags.writeable:          # a read-only view: the caller's array stays as is
                arr = arr.view()
                arr.flags.writeable = False
            cols[name] = arr
        object.__setattr__(self, "columns", cols)

    def __len__(self) -> int:
        return len(self.columns["ts"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def has(self, name: str) -> bool:
        return name in self.columns

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    @property
    def ts(self) -> np.ndarray:
        return self.columns["ts"]

    @property
    def close(self) -> np.ndarray:
        return self.columns["close"]

    @property
    def start_ms(self) -> int:
        return int(self.ts[0]) if len(self) else 0

    @property
    def end_ms(self) -> int:
        """Exclusive end: close of the last bar."""
        return int(self.ts[-1]) + self.interval_ms if len(self) else 0

    def take(self, index: slice | np.ndarray) -> Bars:
        """Rows selected by a slice, boolean mask or index array."""
        return Bars(self.symbol, self.interval_ms, {k: v[index] for k, v in self.columns.items()})

    def between(self, start_ms: int | None = None, end_ms: int | None = None) -> Bars:
        """Bars whose open time is in [start_ms, end_ms)."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.ts, start_ms, "left"))
        hi = len(self) if end_ms is None else int(np.searchsorted(self.ts, end_ms, "left"))
        return self.take(slice(lo, hi))

    def with_columns(self, **new: np.ndarray) -> Bars:
        """A copy with columns added or replaced."""
        return Bars(self.symbol, self.interval_ms, {**self.columns, **new})

    def digest(self) -> str:
        """sha256 of the symbol, interval and every column (name and bytes): what the bars
        ARE, whatever file, path or scenario they came from (a paper run resumes only on
        the same data)."""
        h = hashlib.sha256(f"{self.symbol}|{self.interval_ms}".encode())
        for name, arr in self.columns.items():          # canonical order (construction)
            h.update(f"|{name}|{arr.dtype.str}|".encode())
            h.update(arr.tobytes())
        return h.hexdigest()


def mark_coverage(bars: Bars) -> float:
    """The share of bars whose liquidations run on the venue's mark price (mark klines'
    high and low present and finite). Elsewhere the mark falls back, bar by bar, to
    last-trade prices, whose wicks reach further than Binance's mark (a median of several
    venues' prices): a liquidation found on a trade wick may not have happened at the mark."""
    if not (len(bars) and bars.has("mark_high") and bars.has("mark_low")):
        return 0.0
    ok = np.isfinite(bars["mark_high"]) & np.isfinite(bars["mark_low"])
    return float(ok.mean())


MARKS_FROM_TRADES = ("last-trade prices (no mark-price klines in the data: liquidations "
                     "trigger on trade wicks, which reach further than the mark)")


def mark_prices(bars: Bars) -> str:
    """What the liquidations of a run on `bars` trigger on, in words (JSON meta, notes)."""
    share = mark_coverage(bars)
    if share == 1.0:
        return "mark klines"
    if share == 0.0:
        return MARKS_FROM_TRADES
    pct = np.floor(share * 1000.0) / 10.0            # 99.96% reads 99.9%, never 100.0%
    return (f"mark klines on {pct:.1f}% of the bars, last-trade prices on the rest "
            "(liquidations there trigger on trade wicks, which reach further than the mark)")


def funding_note(bars: Bars) -> str | None:
    """Why a run charges no funding, when the data holds no settled rate (`funding_rate`):
    vendor 4h exports carry the OI-weighted average, an indicator, not a settlement."""
    if bars.has("funding_rate") and bool(np.isfinite(bars["funding_rate"]).any()):
        return None
    return ("funding: none charged (the data holds no funding settlements; import the "
            "venue's fundingRate file beside the klines to charge them)")


TRADE_COLUMNS: tuple[str, ...] = ("ts", "price", "qty", "side")


@dataclass(frozen=True)
class Trades:
    """Ticks of one symbol: ts (int64 ms UTC), price (quote/base), qty (base),
    side (int8: +1 the taker bought, -1 the taker sold)."""

    symbol: str
    ts: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    side: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ts)
        for name, dtype in (("ts", np.int64), ("price", np.float64), ("qty", np.float64),
                            ("side", np.int8)):
            arr = np.ascontiguousarray(getattr(self, name), dtype=dtype)
            if arr.ndim != 1 or len(arr) != n:
                raise ValueError(f"Trades: column {name} has shape {arr.shape}, expected ({n},)")
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return len(self.ts)

    def to_bars(self, interval_ms: int = MINUTE_MS) -> Bars:
        """Aggregate ticks into bars (empty intervals are skipped, not invented)."""
        if len(self) == 0:
            raise ValueError("Trades.to_bars: no trades")
        bucket = self.ts // interval_ms * interval_ms
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        ends = np.r_[starts[1:], len(self)]
        notional = self.price * self.qty
        buy = self.side > 0
        return Bars(self.symbol, interval_ms, {
            "ts": bucket[starts],
            "open": self.price[starts],
            "high": np.maximum.reduceat(self.price, starts),
            "low": np.minimum.reduceat(self.price, starts),
            "close": self.price[ends - 1],
            "volume": np.add.reduceat(self.qty, starts),
            "quote_volume": np.add.reduceat(notional, starts),
            "trades": ends - starts,
            "taker_buy_volume": np.add.reduceat(np.where(buy, self.qty, 0.0), starts),
            "taker_buy_quote_volume": np.add.reduceat(np.where(buy, notional, 0.0), starts),
        })
