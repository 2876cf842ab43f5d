"""Self-contained HTML report of a backtest (inline SVG, no scripts, opens offline)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from backtests import engine as eg
from backtests.runner import RunResult, decision_rows
from bot.data.bars import Bars
from bot.data.dataset import iso

W, H, PAD = 1100, 260, 48
COLORS = {"off": "#d9534f", "on": "#2e86de", "price": "#444", "long": "#e67e22",
          "short": "#27ae60", "liq": "#c0392b"}


def _down(x: np.ndarray, n: int = 1500) -> np.ndarray:
    step = max(1, len(x) // n)
    return np.arange(0, len(x), step)


def _path(xs: np.ndarray, ys: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> str:
    ok = np.isfinite(ys)
    if not ok.any() or x1 == x0:
        return ""
    sx = PAD + (xs - x0) / (x1 - x0) * (W - 2 * PAD)
    span = (y1 - y0) or 1.0
    sy = H - PAD - (ys - y0) / span * (H - 2 * PAD)
    parts = []
    pen = False
    for a, b, good in zip(sx, sy, ok, strict=True):
        if not good:
            pen = False
            continue
        parts.append(f"{'L' if pen else 'M'}{a:.1f},{b:.1f}")
        pen = True
    return " ".join(parts)


def _chart(title: str, series: list[tuple[str, np.ndarray, str, str]], hours: np.ndarray,
           points: list[tuple[float, float, str, str]] | None = None,
           fmt: str = "{:,.0f}") -> str:
    vals = np.concatenate([s[1][np.isfinite(s[1])] for s in series] or [np.zeros(1)])
    if points:
        vals = np.concatenate([vals, [p[1] for p in points]])
    lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    x0, x1 = float(hours[0]), float(hours[-1]) if len(hours) > 1 else float(hours[0]) + 1
    body = [f'<text x="{PAD}" y="18" font-weight="bold">{html.escape(title)}</text>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = H - PAD - (H - 2 * PAD) * k / 4
        body.append(f'<line x1="{PAD}" x2="{W - PAD}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                    f'<text x="4" y="{y + 4:.1f}" font-size="10">{fmt.format(v)}</text>')
    for k in range(6):
        hx = x0 + (x1 - x0) * k / 5
        x = PAD + (W - 2 * PAD) * k / 5
        body.append(f'<text x="{x:.1f}" y="{H - PAD + 16}" font-size="10" '
                    f'text-anchor="middle">{hx:.1f}h</text>')
    for i, (label, ys, color, dash) in enumerate(series):
        idx = _down(ys)
        d = _path(hours[idx], ys[idx], x0, x1, lo, hi)
        body.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="1.3" '
                    f'stroke-dasharray="{dash}"/>')
        body.append(f'<text x="{W - PAD - 160}" y="{18 + 14 * i}" fill="{color}" '
                    f'font-size="11">{html.escape(label)}</text>')
    for px, py, color, tip in points or []:
        sx = PAD + (px - x0) / (x1 - x0) * (W - 2 * PAD)
        sy = H - PAD - (py - lo) / (hi - lo) * (H - 2 * PAD)
        body.append(f'<circle cx="{sx:.1f}" cy="{sy:.1f}" r="4" fill="{color}">'
                    f'<title>{html.escape(tip)}</title></circle>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
            f'font-family="sans-serif">{"".join(body)}</svg>')


def _liq_cell(m: dict[str, Any]) -> str:
    if m.get("liquidated_at") is None:
        return "-"
    return f"{m['liquidated_at']} at {m['liquidation_price']:,.2f}"


def write(path: Path, bars: Bars, runs: dict[str, RunResult], clusters: np.ndarray,
          meta: dict[str, Any]) -> None:
    """Price with clusters, position leverage, equity on vs off, decision timeline."""
    hours = (bars.ts - bars.ts[0]) / 3_600_000.0
    price = _chart(
        f"{bars.symbol} close with the nearest dense liquidation clusters",
        [("close", bars.close.astype(float), COLORS["price"], ""),
         ("long-liq cluster below", clusters[:, 0], COLORS["long"], "3,3"),
         ("short-liq cluster above", clusters[:, 3], COLORS["short"], "3,3")], hours,
        points=[(hours[int(t[0])], t[3], COLORS["liq"], f"{name}: liquidated at {t[3]:,.2f}")
                for name, r in runs.items() for t in r.trades if t[6] == 1.0])
    lev = _chart("position leverage (notional / equity)",
                 [(f"risk {k}", r.records[:, eg.R_LEVERAGE], COLORS.get(k, "#888"), "")
                  for k, r in runs.items()], hours, fmt="{:.1f}x")
    eq = _chart("equity (quote)", [(f"risk {k}", r.records[:, eg.R_EQUITY],
                                    COLORS.get(k, "#888"), "") for k, r in runs.items()], hours)
    rows = []
    for k, r in runs.items():
        m = r.metrics
        rows.append(f"<tr><td>{k}</td><td>{m['total_return']:+.2%}</td>"
                    f"<td>{m['max_drawdown']:.2%}</td><td>{m['sharpe']:.2f}</td>"
                    f"<td>{m['liquidations']}</td><td>{m['funding']:,.0f}</td>"
                    f"<td>{m['fees']:,.0f}</td><td>{m['slippage']:,.0f}</td>"
                    f"<td>{m['n_trades']}</td><td>{m['n_risk_actions']}</td>"
                    f"<td>{_liq_cell(m)}</td></tr>")
    timeline = []
    if "on" in runs:
        for d in decision_rows(runs["on"], bars)[:500]:
            timeline.append(f"<tr><td>{d['ts']}</td><td>{d['state']}</td>"
                            f"<td>{d['target_notional']:,.0f} &rarr; "
                            f"{d['allowed_notional']:,.0f}</td>"
                            f"<td>{html.escape(d['text'])}</td></tr>")
    info = " &middot; ".join(f"{html.escape(str(k))}: {html.escape(str(v))}"
                             for k, v in meta.items())
    doc = f"""<!doctype html><html><head><meta charset="utf-8">
<title>liqbot backtest {html.escape(bars.symbol)}</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ddd;padding:4px 8px;font-size:13px;text-align:right}}
td:last-child{{text-align:left}}</style></head><body>
<h1>liqbot backtest: {html.escape(bars.symbol)}</h1>
<p>{iso(bars.start_ms)} .. {iso(bars.end_ms)} &middot; {info}</p>
<table><tr><th>risk</th><th>return</th><th>max DD</th><th>Sharpe</th><th>liquidations</th>
<th>funding</th><th>fees</th><th>slippage</th><th>trades</th><th>binding interventions</th>
<th>first liquidation</th></tr>
{''.join(rows)}</table>
{price}{lev}{eq}
<h2>Risk decisions (risk on){' - first 500' if len(timeline) >= 500 else ''}</h2>
<table><tr><th>time</th><th>state</th><th>target &rarr; allowed</th><th>why</th></tr>
{''.join(timeline) or '<tr><td colspan="4">none</td></tr>'}</table>
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
