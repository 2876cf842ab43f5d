"""Stylized facts of a cascade, measured the same way on real and synthetic bars.

Used to calibrate the synthetic generator against the real days (`docs/synthetic.md`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bot.data.bars import Bars

PRIOR_MINUTES = 120


@dataclass(frozen=True)
class CascadeFacts:
    """Worst 1m move, volume spike, trade intensity, taker side and recovery of one span.

    - worst_1m: min over bars of low/open - 1 (a fraction, -0.0615 = -6.15%);
    - volume_spike: peak 1m quote volume / median quote volume of the prior 2 hours;
    - peak_trades: max trades in one minute;
    - taker_buy_share: taker-buy quote / quote volume in the peak-volume minute;
    - recovered_2h: (max high in the 2h after the span's low - low) / (max high in the 2h
      before the low - low).
    """

    worst_1m: float
    worst_1m_ts: int
    volume_spike: float
    peak_volume_ts: int
    peak_trades: float
    taker_buy_share: float
    recovered_2h: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def cascade_facts(bars: Bars) -> CascadeFacts:
    o, h, lo = bars["open"], bars["high"], bars["low"]
    qv = bars["quote_volume"] if bars.has("quote_volume") else bars["volume"] * bars["close"]
    r = lo / o - 1.0
    w = int(np.argmin(r))
    p = int(np.argmax(qv))
    prior = qv[max(0, p - PRIOR_MINUTES):p]
    spike = float(qv[p] / np.median(prior)) if len(prior) and np.median(prior) > 0 else np.nan
    tb = (bars["taker_buy_quote_volume"][p] / qv[p]) if bars.has("taker_buy_quote_volume") \
        else np.nan
    li = int(np.argmin(lo))
    before = h[max(0, li - PRIOR_MINUTES):li + 1].max()
    after = h[li + 1:li + 1 + PRIOR_MINUTES]
    drop = before - lo[li]
    rec = float((after.max() - lo[li]) / drop) if len(after) and drop > 0 else np.nan
    trades = float(bars["trades"].max()) if bars.has("trades") else np.nan
    return CascadeFacts(float(r[w]), int(bars.ts[w]), spike, int(bars.ts[p]), trades,
                        float(tb), rec)
