"""Market-data vendor bucket exports (Coinglass-style API dumps) and how they land on bars.

Every layout is `time` (bucket OPEN, int64 ms UTC) plus value columns, one row per bucket of a
regular length inferred from the file (4h or 8h in practice). The layouts share headers
(`time,open,high,low,close`), so the FILE NAME decides the kind (`detect_kind`); a file with
another name is labelled by the user (`FILE:KIND`). Units and the column mapping are in
`LAYOUTS` and docs/data.md.

Timing (no lookahead, `bot.data.align`): a bucket [open, open + L) is known at its END.
- On a grid finer than the bucket (1m bars, 4h buckets) it is published at open + L and, by
  `align_asof`'s strict rule, visible from the first bar whose close is AFTER open + L.
- When a bar contains the whole bucket (the 4h price grid itself, or coarser bars), the bucket
  is part of that bar's own data, known at its close like the bar's OHLC: it lands on it.
State series (OI, funding, ratios) are as-of that visibility and expire (NaN) once the next
bucket, absent from the file, would have become visible. Flow series (liquidations, taker
notional) are events: the whole bucket's sum on the bar where it becomes visible, 0 on other
covered bars, NaN outside the file's coverage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.data.align import align_asof, place_events
from bot.data.bars import Bars
from bot.data.csvfile import CsvSpec, CsvTable, read_csv, read_head
from bot.data.validate import MAX_FUNDING_RATE, check_bar_columns, check_time
from bot.errors import DataError

PERCENT = 0.01  # vendor funding is in percent per 8h: 0.005 (%) -> 5e-05 (rate)


@dataclass(frozen=True)
class Layout:
    """One vendor file kind: the file-name pattern (on the name without .csv/.gz/.zip), the
    header in file order, its role on bars and a one-line description with units."""

    kind: str
    pattern: str
    columns: tuple[str, ...]
    role: str  # "grid" | "state" | "event" | "ignored"
    about: str


_OHLC = ("time", "open", "high", "low", "close")
_COIN = r"(?P<coin>[A-Za-z0-9]+)"
LAYOUTS: dict[str, Layout] = {lay.kind: lay for lay in (
    Layout("price_ohlc", r"api_price_ohlc_history", _OHLC + ("volume_usd",), "grid",
           "perpetual OHLC (quote/base) + volume_usd (quote); the bar grid when no klines"),
    Layout("open_interest", rf"api_futures_openInterest_ohlc_aggregated_history_{_COIN}", _OHLC,
           "state", "OI OHLC summed over exchanges, USD -> open_interest_value (close), "
                    "open_interest (base = close / price at bucket end)"),
    Layout("open_interest_coin_margin",
           rf"api_futures_openInterest_ohlc_aggregated_coin_margin_history_{_COIN}", _OHLC,
           "state", "coin-margined OI OHLC, USD -> oi_coin_margin_value (close)"),
    Layout("open_interest_stablecoin",
           rf"api_futures_openInterest_ohlc_aggregated_stablecoin_{_COIN}", _OHLC, "state",
           "stablecoin-margined OI OHLC, unit undocumented -> oi_stablecoin (close; relative "
           "change only)"),
    Layout("funding_oi_weighted", rf"api_futures_fundingRate_oi_weight_ohlc_history_{_COIN}",
           _OHLC, "state", "OI-weighted funding OHLC, percent per 8h -> funding_rate_avg "
                           "(close / 100, rate per 8h)"),
    Layout("funding_exchange",
           rf"api_futures_fundingRate_ohlc_history_{_COIN}_(?P<exchange>[A-Za-z]+)", _OHLC,
           "state", "one venue's running funding OHLC, percent per 8h -> funding_rate_live "
                    "(close / 100, rate per 8h; not the settled rate)"),
    Layout("long_short_accounts", r"api_futures_global_long_short_account_ratio_history",
           ("time", "global_account_long_percent", "global_account_short_percent",
            "global_account_long_short_ratio"), "state",
           "global accounts long/short, percent -> long_short_ratio (long% / short%)"),
    Layout("top_long_short_positions", r"api_futures_top_long_short_position_ratio_history",
           ("time", "top_position_long_percent", "top_position_short_percent",
            "top_position_long_short_ratio"), "state",
           "top traders' positions long/short, percent -> top_long_short_ratio (long% / short%)"),
    Layout("taker_volume", r"api_futures_aggregated_taker_buy_sell_volume_history",
           ("time", "aggregated_buy_volume_usd", "aggregated_sell_volume_usd"), "event",
           "taker buy / sell notional per bucket, USD -> agg_taker_buy_notional, "
           "agg_taker_sell_notional (bucket sums)"),
    Layout("liquidations", rf"api_futures_liquidation_aggregated_coin_history_{_COIN}",
           ("time", "aggregated_long_liquidation_usd", "aggregated_short_liquidation_usd"),
           "event", "realised liquidations per bucket, USD -> liq_long_notional, "
                    "liq_short_notional (bucket sums)"),
    Layout("orderbook_depth", rf"api_futures_orderbook_aggregated_ask_bids_history_{_COIN}",
           ("aggregated_bids_usd", "aggregated_bids_quantity", "aggregated_asks_usd",
            "aggregated_asks_quantity", "time"), "ignored",
           "aggregated book depth (USD and base); read and validated, attached to nothing"),
)}
VENDOR_KINDS: tuple[str, ...] = tuple(LAYOUTS)
_SIGNED = frozenset({"funding_oi_weighted", "funding_exchange"})
_COMPRESSED = re.compile(r"\.csv(\.gz|\.zip)?$|\.gz$|\.zip$", re.IGNORECASE)


def detect_kind(path: Path) -> tuple[str, str | None] | None:
    """(kind, coin) when the file name is a known vendor export, else None."""
    stem = _COMPRESSED.sub("", path.name)
    for lay in LAYOUTS.values():
        m = re.fullmatch(lay.pattern, stem)
        if m:
            coin = m.groupdict().get("coin")
            return lay.kind, coin.upper() if coin else None
    return None


@dataclass(frozen=True)
class VendorFile:
    """One parsed, validated vendor file: bucket open times, bucket length, raw columns."""

    path: Path
    kind: str
    coin: str | None
    table: CsvTable
    open_ms: np.ndarray
    bucket_ms: int

    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.kind]

    def col(self, name: str) -> np.ndarray:
        return self.table.columns[name]


def load(path: Path, kind: str, coin: str | None = None) -> VendorFile:
    """Parse and validate one vendor file of `kind` (quoted numbers and e-notation accepted)."""
    lay = LAYOUTS[kind]
    spec = CsvSpec(kind, tuple((c, "f8") for c in lay.columns))
    table = read_csv(path, spec)
    label = table.label
    if table.has_header:
        _check_header(path, table, lay)
    raw = table.columns["time"]
    frac = np.flatnonzero(raw != np.floor(raw))
    if len(frac):
        i = int(frac[0])
        raise DataError(label, f"timestamp {float(raw[i])!r} is not a whole number of milliseconds",
                        row=table.line_of(i), column="time")
    ts = raw.astype(np.int64)
    _check_unit(ts, table)
    check_time(ts, label, table.line_of, "time")
    step = _bucket_length(ts, table)
    for name in (n for n in lay.columns if n != "time"):
        v = table.columns[name]
        bad = np.flatnonzero(~np.isfinite(v))
        if len(bad):
            raise DataError(label, "value is NaN or infinite", row=table.line_of(int(bad[0])),
                            column=name)
        if kind in _SIGNED:
            big = np.flatnonzero(np.abs(v) * PERCENT > MAX_FUNDING_RATE)
            if len(big):
                i = int(big[0])
                raise DataError(label, f"funding {float(v[i])!r}% per 8h is beyond "
                                       f"+-{MAX_FUNDING_RATE / PERCENT:g}%: the vendor's funding "
                                       "is in percent (0.01 = 0.01%); corrupt or mis-scaled",
                                row=table.line_of(i), column=name)
        else:
            neg = np.flatnonzero(v < 0)
            if len(neg):
                i = int(neg[0])
                raise DataError(label, f"negative value {float(v[i])!r}; {kind} values cannot be "
                                       "negative", row=table.line_of(i), column=name)
    if kind == "price_ohlc":
        c = table.columns
        check_bar_columns({"ts": ts, "open": c["open"], "high": c["high"], "low": c["low"],
                           "close": c["close"]}, label, table.line_of)
    return VendorFile(path, kind, coin, table, ts, step)


def _check_header(path: Path, table: CsvTable, lay: Layout) -> None:
    first = read_head(path)[0].split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    got = [h.strip().strip('"').strip() for h in first.split(",")]
    for i, (g, want) in enumerate(zip(got, lay.columns, strict=True)):
        if g != want:
            raise DataError(table.label, f"header column {i + 1} is {g!r}, expected {want!r} for "
                                         f"kind {lay.kind} ({', '.join(lay.columns)})", row=1)


def _check_unit(ts: np.ndarray, table: CsvTable) -> None:
    """Vendor times are ms; name seconds or microseconds when found (a factor-1000 slip)."""
    for unit, mask in (("seconds", ts < 10**11), ("microseconds", ts >= 10**14)):
        hit = np.flatnonzero(mask)
        if len(hit):
            i = int(hit[0])
            raise DataError(table.label, f"timestamp {int(ts[i])} is in {unit}, not milliseconds "
                                         "(expected e.g. 1760054400000 for 2025-10-10T00:00Z); "
                                         "convert the file to ms", row=table.line_of(i),
                            column="time")


def _bucket_length(ts: np.ndarray, table: CsvTable) -> int:
    """The regular spacing of the buckets (first difference), or a DataError at the first
    row that breaks it."""
    if len(ts) < 2:
        raise DataError(table.label, "one bucket only: at least two rows are needed to infer "
                                     "the bucket length")
    d = np.diff(ts)
    step = int(d[0])
    bad = np.flatnonzero(d != step)
    if len(bad):
        i = int(bad[0]) + 1
        raise DataError(table.label, f"irregular bucket spacing: {int(d[i - 1])} ms after the "
                                     f"previous row, the file's buckets are {step} ms "
                                     "(missing or extra bucket?)", row=table.line_of(i),
                        column="time")
    return step


def price_bars(f: VendorFile, symbol: str) -> Bars:
    """The price file as the bar grid: OHLC (quote/base), quote_volume = volume_usd (quote),
    volume (base) approximated as volume_usd / ((open + high + low + close) / 4)."""
    c = f.table.columns
    mean_price = (c["open"] + c["high"] + c["low"] + c["close"]) / 4.0
    return Bars(symbol, f.bucket_ms, {
        "ts": f.open_ms, "open": c["open"], "high": c["high"], "low": c["low"],
        "close": c["close"], "volume": c["volume_usd"] / mean_price,
        "quote_volume": c["volume_usd"]})


def visible_at(bar_ts: np.ndarray, step: int, open_ms: np.ndarray, bucket_ms: int) -> np.ndarray:
    """Per bucket, the time to hand to `align_asof` / `place_events`: the bucket end, minus
    1 ms when a bar contains the whole bucket (then it is that bar's own data)."""
    end = open_ms + bucket_ms
    idx = np.searchsorted(bar_ts, open_ms, "right") - 1
    safe = np.clip(idx, 0, None)
    contained = (idx >= 0) & (end <= bar_ts[safe] + step)
    return end - contained.astype(np.int64)


def price_at(bars: Bars, t: np.ndarray) -> np.ndarray:
    """Price at instants `t`: close of the bar ending at t, else open of the bar starting at
    t, else NaN (the bucket's edge is outside the grid)."""
    ts, step, n = bars.ts, bars.interval_ms, len(bars)
    out = np.full(len(t), np.nan)
    j = np.searchsorted(ts, t - step)
    ok = (j < n) & (ts[np.clip(j, 0, n - 1)] == t - step)
    out[ok] = bars.close[j[ok]]
    k = np.searchsorted(ts, t)
    ok2 = ~ok & (k < n) & (ts[np.clip(k, 0, n - 1)] == t)
    out[ok2] = bars["open"][k[ok2]]
    return out


def bucket_series(f: VendorFile, bars: Bars) -> dict[str, np.ndarray]:
    """Values per bucket in bar units, keyed by bar column (empty for ignored kinds)."""
    c, k = f.table.columns, f.kind
    if k == "open_interest":
        price = price_at(bars, f.open_ms + f.bucket_ms)
        return {"open_interest_value": c["close"], "open_interest": c["close"] / price}
    if k == "open_interest_coin_margin":
        return {"oi_coin_margin_value": c["close"]}
    if k == "open_interest_stablecoin":
        return {"oi_stablecoin": c["close"]}
    if k == "funding_oi_weighted":
        return {"funding_rate_avg": c["close"] * PERCENT}
    if k == "funding_exchange":
        return {"funding_rate_live": c["close"] * PERCENT}
    if k in ("long_short_accounts", "top_long_short_positions"):
        pre = "global_account" if k == "long_short_accounts" else "top_position"
        name = "long_short_ratio" if k == "long_short_accounts" else "top_long_short_ratio"
        lo, sh = c[f"{pre}_long_percent"], c[f"{pre}_short_percent"]
        with np.errstate(divide="ignore", invalid="ignore"):
            return {name: np.where(sh > 0, lo / sh, np.nan)}
    if k == "taker_volume":
        return {"agg_taker_buy_notional": c["aggregated_buy_volume_usd"],
                "agg_taker_sell_notional": c["aggregated_sell_volume_usd"]}
    if k == "liquidations":
        return {"liq_long_notional": c["aggregated_long_liquidation_usd"],
                "liq_short_notional": c["aggregated_short_liquidation_usd"]}
    return {}


def attach(f: VendorFile, bars: Bars) -> dict[str, np.ndarray]:
    """The file's bar columns on `bars`, without lookahead (module docstring)."""
    series = bucket_series(f, bars)
    if not series:
        return {}
    ts, step = bars.ts, bars.interval_ms
    vis = visible_at(ts, step, f.open_ms, f.bucket_ms)
    close = ts + step
    covered = (close > vis[0]) & (close <= vis[-1] + f.bucket_ms)
    out: dict[str, np.ndarray] = {}
    for name, v in series.items():
        if f.layout.role == "event":
            col = place_events(ts, step, vis, v)
            col[covered & np.isnan(col)] = 0.0
        else:
            col = align_asof(ts, step, vis, v)
        col[~covered] = np.nan
        out[name] = col
    return out


def kinds_help() -> str:
    """'kind: description' lines for the CLI help and error messages."""
    return "; ".join(f"{lay.kind} ({lay.pattern.replace(_COIN, '{COIN}')})"
                     for lay in LAYOUTS.values())
