"""Per-symbol minute state of the live exchange feed: raw Binance USD-M stream payloads in,
closed bar dicts (keyed by `bot.data.bars` column names) out. Pure, no I/O.

Field sources (one bar, one symbol):
- OHLCV + quote_volume, trades, taker_buy_volume, taker_buy_quote_volume: the FINAL
  `kline_1m` message (`x: true`: o h l c v q n V Q); when the stream missed it, the REST
  kline (ccxt 6 fields: the flow columns are then NaN).
- mark_open..mark_close: first/max/min/last `markPriceUpdate.p` whose event time E is in the
  bar, when the mark stream was connected for the whole bar; otherwise REST markPriceKlines.
- index_close: `i` of the last mark update in the bar (NaN when the mark came from REST).
- funding_rate: on the bar containing the settlement. Stream: the last `r` announced for a
  funding time T, settled once an update arrives with E >= T and a later T; REST
  fundingRate rows override it for every bar a REST fill covered.
- liq_long_notional / liq_short_notional: sum of forceOrder ap * z (quote) by trade time;
  SELL liquidates a long. 0.0 when the liquidation stream was connected for the whole bar and
  nothing came, NaN when it was not (Binance pushes at most one snapshot per second per
  symbol, so the sums are lower bounds on the true liquidated notional).
- open_interest (base), open_interest_value (quote), long_short_ratio: latest polled sample
  whose visibility time (max(exchange stamp, poll receipt time)) is before the bar's close.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.signals.liquidations import LiquidationEvent, MalformedMessage

NAN = math.nan
#: Every emitted bar has these keys (NaN where the source had nothing).
BAR_FIELDS: tuple[str, ...] = (
    "open", "high", "low", "close", "volume", "quote_volume", "trades", "taker_buy_volume",
    "taker_buy_quote_volume", "mark_open", "mark_high", "mark_low", "mark_close", "index_close",
    "funding_rate", "open_interest", "open_interest_value", "long_short_ratio",
    "liq_long_notional", "liq_short_notional",
)
_KLINE_REQUIRED = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}
_KLINE_FLOW = {"q": "quote_volume", "n": "trades", "V": "taker_buy_volume",
               "Q": "taker_buy_quote_volume"}


def _number(obj: Mapping[str, Any], key: str, what: str, required: bool = True) -> float:
    raw = obj.get(key)
    if raw is None and not required:
        return NAN
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MalformedMessage(f"{what}: field {key!r} is {raw!r}, not a number") from None
    if not math.isfinite(value) or value < 0:
        raise MalformedMessage(f"{what}: field {key!r} is {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class Kline:
    """One `kline` message: bar open time, Bars-named fields, and whether it is final."""

    symbol: str
    ts: int
    fields: dict[str, float]
    final: bool


def parse_kline(data: Mapping[str, Any]) -> Kline:
    """A Binance `kline` event (unwrapped). Raises MalformedMessage on a bad shape."""
    k = data.get("k")
    if not isinstance(k, Mapping):
        raise MalformedMessage("kline: no 'k' object")
    ts = int(_number(k, "t", "kline"))
    fields = {name: _number(k, key, "kline") for key, name in _KLINE_REQUIRED.items()}
    fields.update({name: _number(k, key, "kline", required=False)
                   for key, name in _KLINE_FLOW.items()})
    if not fields["low"] <= min(fields["open"], fields["close"]) or \
            not fields["high"] >= max(fields["open"], fields["close"]):
        raise MalformedMessage(f"kline: inconsistent OHLC {fields}")
    final = k.get("x")
    if not isinstance(final, bool):
        raise MalformedMessage(f"kline: field 'x' is {final!r}, not a boolean")
    return Kline(str(k.get("s") or data.get("s") or ""), ts, fields, final)


@dataclass(frozen=True, slots=True)
class MarkUpdate:
    """One `markPriceUpdate`: event time, mark, index, funding estimate and its time."""

    symbol: str
    event_ms: int
    mark: float
    index: float
    rate: float | None
    funding_ms: int | None


def parse_mark(data: Mapping[str, Any]) -> MarkUpdate:
    """A Binance `markPriceUpdate` event (unwrapped). Raises MalformedMessage."""
    event_ms = int(_number(data, "E", "markPriceUpdate"))
    mark = _number(data, "p", "markPriceUpdate")
    index = _number(data, "i", "markPriceUpdate", required=False)
    try:
        rate = float(data["r"]) if data.get("r") not in (None, "") else None
    except (TypeError, ValueError):
        raise MalformedMessage(f"markPriceUpdate: field 'r' is {data.get('r')!r}") from None
    if rate is not None and not math.isfinite(rate):
        raise MalformedMessage(f"markPriceUpdate: field 'r' is {data.get('r')!r}")
    t = data.get("T")
    funding_ms = int(_number(data, "T", "markPriceUpdate")) if t not in (None, 0, "0") else None
    return MarkUpdate(str(data.get("s", "")), event_ms, mark, index, rate, funding_ms)


@dataclass
class SymbolBook:
    """Everything the streams and REST fills said about one symbol, bucketed by bar."""

    interval_ms: int
    klines: dict[int, Kline] = field(default_factory=dict)
    latest_kline_ts: int = -1
    marks: dict[int, list[float]] = field(default_factory=dict)      # ts -> [o, h, l, c, idx]
    last_mark_ms: int = -1
    liq: dict[int, list[float]] = field(default_factory=dict)        # ts -> [long, short]
    stream_funding: dict[int, float] = field(default_factory=dict)   # bar ts -> rate
    rest_funding: dict[int, float] = field(default_factory=dict)     # bar ts -> rate or NaN
    positioning: list[tuple[int, float, float, float]] = field(default_factory=list)
    _next_funding: tuple[int, float] | None = None

    def bucket(self, t_ms: int) -> int:
        return t_ms // self.interval_ms * self.interval_ms

    def on_kline(self, k: Kline) -> None:
        prev = self.klines.get(k.ts)
        if prev is None or not prev.final:   # a final candle is never overwritten
            self.klines[k.ts] = k
        self.latest_kline_ts = max(self.latest_kline_ts, k.ts)

    def on_mark(self, u: MarkUpdate) -> None:
        b = self.bucket(u.event_ms)
        m = self.marks.get(b)
        if m is None:
            self.marks[b] = [u.mark, u.mark, u.mark, u.mark, u.index]
        else:
            m[1], m[2], m[3], m[4] = max(m[1], u.mark), min(m[2], u.mark), u.mark, u.index
        self.last_mark_ms = max(self.last_mark_ms, u.event_ms)
        if u.rate is None or u.funding_ms is None:
            return
        nxt = self._next_funding
        if nxt is not None and u.funding_ms > nxt[0] and u.event_ms >= nxt[0]:
            self.stream_funding.setdefault(self.bucket(nxt[0]), nxt[1])
        self._next_funding = (u.funding_ms, u.rate)

    def on_liquidation(self, ev: LiquidationEvent) -> None:
        sums = self.liq.setdefault(self.bucket(ev.ts), [0.0, 0.0])
        sums[0 if ev.side == "long" else 1] += ev.notional

    def on_positioning(self, visible_ms: int, oi: float, oi_value: float, ratio: float) -> None:
        self.positioning.append((visible_ms, oi, oi_value, ratio))
        self.positioning.sort(key=lambda s: s[0])

    def kline_final(self, ts: int) -> bool:
        k = self.klines.get(ts)
        return k is not None and k.final

    def assemble(self, ts: int, rest: Mapping[str, float] | None, mark_covered: bool,
                 liq_covered: bool) -> dict[str, float] | None:
        """The bar opening at `ts`, or None when neither the stream nor REST has its OHLCV."""
        bar: dict[str, float] = {"ts": ts, **dict.fromkeys(BAR_FIELDS, NAN)}
        k = self.klines.get(ts)
        if k is not None and k.final:
            bar.update(k.fields)
        elif rest is not None and "open" in rest:
            bar.update({c: float(rest[c]) for c in ("open", "high", "low", "close", "volume")})
        else:
            return None
        m = self.marks.get(ts)
        if mark_covered and m is not None:
            bar.update(mark_open=m[0], mark_high=m[1], mark_low=m[2], mark_close=m[3],
                       index_close=m[4])
        elif rest is not None and math.isfinite(rest.get("mark_close", NAN)):
            bar.update({c: float(rest[c]) for c in ("mark_open", "mark_high", "mark_low",
                                                    "mark_close")})
        if ts in self.rest_funding:
            bar["funding_rate"] = self.rest_funding[ts]
        else:
            bar["funding_rate"] = self.stream_funding.get(ts, NAN)
        liq = self.liq.get(ts)
        if liq is not None:
            bar["liq_long_notional"], bar["liq_short_notional"] = liq
        elif liq_covered:
            bar["liq_long_notional"] = bar["liq_short_notional"] = 0.0
        close = ts + self.interval_ms
        for visible, oi, oi_value, ratio in reversed(self.positioning):
            if visible < close:
                bar.update(open_interest=oi, open_interest_value=oi_value,
                           long_short_ratio=ratio)
                break
        return bar

    def prune(self, before_ms: int) -> None:
        """Forget bars that were emitted (keep the last positioning sample before them)."""
        for d in (self.klines, self.marks, self.liq, self.stream_funding, self.rest_funding):
            for t in [t for t in d if t < before_ms]:
                del d[t]
        older = [s for s in self.positioning if s[0] < before_ms]
        self.positioning = older[-1:] + [s for s in self.positioning if s[0] >= before_ms]
