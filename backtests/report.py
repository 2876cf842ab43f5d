"""Self-contained HTML report of a backtest (inline SVG and one inline PNG, no scripts,
opens offline): risk off vs on at a glance.

Panels share a UTC date axis: price with the nearest liquidation clusters, fills,
liquidations and risk-action markers (risk on); the liquidation map's density over time
and price with the close on top; position leverage and equity, off vs on; then the
metrics table, the trade list and the risk decision timeline.
"""

from __future__ import annotations

import base64
import html
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from backtests import engine as eg
from backtests.metrics import short_span_note
from backtests.runner import RunResult, decision_rows
from bot.data.bars import Bars
from bot.data.dataset import iso

W, H, PAD = 1100, 260, 48
COLORS = {"off": "#d9534f", "on": "#2e86de", "price": "#444", "long": "#e67e22",
          "short": "#27ae60", "liq": "#c0392b"}
STATE_COLORS = ("#27ae60", "#e67e22", "#c0392b")         # ACTIVE, REDUCING, HALTED
# colormap anchors for the density image (dark to bright, inferno-like)
_CMAP = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                  [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=float)


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
           fmt: str = "{:,.0f}", t0_ms: int = 0,
           ticks: list[tuple[float, str, str]] | None = None,
           background: str = "", y_range: tuple[float, float] | None = None) -> str:
    vals = np.concatenate([s[1][np.isfinite(s[1])] for s in series] or [np.zeros(1)])
    if points:
        vals = np.concatenate([vals, [p[1] for p in points]])
    lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    if y_range is not None:
        lo, hi = y_range
    x0, x1 = float(hours[0]), float(hours[-1]) if len(hours) > 1 else float(hours[0]) + 1
    body = [f'<text x="{PAD}" y="18" font-weight="bold">{html.escape(title)}</text>', background]
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = H - PAD - (H - 2 * PAD) * k / 4
        body.append(f'<line x1="{PAD}" x2="{W - PAD}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                    f'<text x="4" y="{y + 4:.1f}" font-size="10">{fmt.format(v)}</text>')
    for k in range(6):
        hx = x0 + (x1 - x0) * k / 5
        x = PAD + (W - 2 * PAD) * k / 5
        body.append(f'<text x="{x:.1f}" y="{H - PAD + 16}" font-size="10" '
                    f'text-anchor="middle">{_utc(t0_ms, hx)}</text>')
    for hx, color, tip in ticks or []:            # risk actions: a tick under the plot
        x = PAD + (hx - x0) / (x1 - x0) * (W - 2 * PAD)
        body.append(f'<rect x="{x - 1:.1f}" y="{H - PAD - 10}" width="3" height="10" '
                    f'fill="{color}" class="risk-action"><title>{html.escape(tip)}</title></rect>')
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


def _utc(t0_ms: int, hours: float) -> str:
    """Axis label: 'MM-DD HH:MM' UTC of t0 + hours."""
    return iso(int(t0_ms + hours * 3_600_000))[5:16].replace("T", " ")


def _png(rgb: np.ndarray) -> bytes:
    """A minimal PNG encoder for an (h, w, 3) uint8 image (no imaging dependency)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def density_image(bars: Bars, brackets: Any, columns: int = 300, rows: int = 120
                  ) -> tuple[np.ndarray, float, float]:
    """The liquidation map's density (both sides, quote notional) on a time x log-price
    grid: (rgb image with price rising upwards, low price, high price)."""
    from bot.signals import heatmap as hm
    n = len(bars)
    stride = max(1, n // columns)
    run = hm.run(bars, brackets, stride=stride)
    lo_p = float(np.nanmin(bars["low"])) * 0.97
    hi_p = float(np.nanmax(bars["high"])) * 1.03
    edges = np.exp(np.linspace(np.log(lo_p), np.log(hi_p), rows + 1))
    width = float(run.meta[hm.M_WIDTH])
    img = np.zeros((rows, len(run.snapshots)))
    for k, (m, lo) in enumerate(zip(run.snapshots, run.snapshot_lo, strict=True)):
        centers = np.exp(lo + (np.arange(m.shape[1]) + 0.5) * width)
        idx = np.searchsorted(edges, centers) - 1
        ok = (idx >= 0) & (idx < rows)
        np.add.at(img[:, k], idx[ok], (m[0] + m[1])[ok])
    top = img.max() if img.max() > 0 else 1.0
    v = np.clip(np.log10(np.maximum(img / top, 1e-3)) / 3.0 + 1.0, 0.0, 1.0)   # 3 decades
    pos = v * (len(_CMAP) - 1)
    i = np.minimum(pos.astype(int), len(_CMAP) - 2)
    f = (pos - i)[..., None]
    rgb = (_CMAP[i] * (1 - f) + _CMAP[i + 1] * f).astype(np.uint8)
    return rgb[::-1], lo_p, hi_p


def _heat_panel(bars: Bars, brackets: Any, hours: np.ndarray) -> str:
    rgb, lo_p, hi_p = density_image(bars, brackets)
    uri = "data:image/png;base64," + base64.b64encode(_png(rgb)).decode()
    bg = (f'<image x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" '
          f'preserveAspectRatio="none" href="{uri}"/>')
    # the price axis of the image is logarithmic: draw log(close) on a log-scaled axis
    logc = np.log(bars.close.astype(float))
    chart = _chart(f"{bars.symbol} liquidation map density (log, both sides) with the close",
                   [("close", logc, "#3fc1ff", "")], hours, t0_ms=int(bars.ts[0]),
                   background=bg, y_range=(float(np.log(lo_p)), float(np.log(hi_p))),
                   fmt="{:.3f}")
    # relabel the y axis in prices
    for k in range(5):
        v = np.log(lo_p) + (np.log(hi_p) - np.log(lo_p)) * k / 4
        chart = chart.replace(f">{v:.3f}</text>", f">{np.exp(v):,.0f}</text>", 1)
    return chart


def _trade_rows(runs: dict[str, RunResult], bars: Bars) -> list[str]:
    rows = []
    for name, r in runs.items():
        for t in r.trades:
            k = int(t[0])
            qty = float(t[2])
            liq = t[6] == 1.0
            side = ("liquidated " if liq else "") + ("buy" if qty > 0 else "sell")
            rows.append((int(bars.ts[k]), f'<tr class="{"liq" if liq else ""}"><td>'
                         f"{iso(int(bars.ts[k]))}</td><td>{name}</td><td>{side}"
                         f"{' (hedge)' if int(t[1]) % 2 else ''}</td><td>{qty:+.6f}</td>"
                         f"<td>{t[3]:,.2f}</td><td>{abs(qty) * t[3]:,.0f}</td><td>{t[4]:,.2f}</td>"
                         f"<td>{t[5]:,.2f}</td></tr>"))
    return [r for _, r in sorted(rows, key=lambda x: x[0])]


def _liq_cell(m: dict[str, Any]) -> str:
    if m.get("liquidated_at") is None:
        return "-"
    return f"{m['liquidated_at']} at {m['liquidation_price']:,.2f}"


def write(path: Path, bars: Bars, runs: dict[str, RunResult], clusters: np.ndarray,
          meta: dict[str, Any], brackets: Any = None) -> None:
    """Write the report (module docstring). `brackets` (for the heatmap panel) default to
    `brackets.for_symbol` (the shipped Binance tiers of the symbol, else BTCUSDT's)."""
    hours = (bars.ts - bars.ts[0]) / 3_600_000.0
    t0 = int(bars.ts[0])
    if brackets is None:
        from bot.mechanics import brackets as br
        brackets = br.for_symbol(bars.symbol)
    from bot.risk import engine as en
    ticks = []
    if "on" in runs:
        for d in runs["on"].decisions:
            state = int(d[3 + en.D_STATE])
            ticks.append((float(hours[int(d[0])]), STATE_COLORS[state],
                          f"{iso(int(bars.ts[int(d[0])]))} {en.STATE_NAMES[state]}"))
    price = _chart(
        f"{bars.symbol} close with the nearest dense liquidation clusters",
        [("close", bars.close.astype(float), COLORS["price"], ""),
         ("long-liq cluster below", clusters[:, 0], COLORS["long"], "3,3"),
         ("short-liq cluster above", clusters[:, 3], COLORS["short"], "3,3")], hours,
        points=[(hours[int(t[0])], t[3], COLORS["liq"], f"{name}: liquidated at {t[3]:,.2f}")
                for name, r in runs.items() for t in r.trades if t[6] == 1.0],
        t0_ms=t0, ticks=ticks)
    heat = _heat_panel(bars, brackets, hours)
    lev = _chart("position leverage (notional / equity)",
                 [(f"risk {k}", r.records[:, eg.R_LEVERAGE], COLORS.get(k, "#888"), "")
                  for k, r in runs.items()], hours, fmt="{:.1f}x", t0_ms=t0, ticks=ticks)
    eq = _chart("equity (quote)", [(f"risk {k}", r.records[:, eg.R_EQUITY],
                                    COLORS.get(k, "#888"), "") for k, r in runs.items()], hours,
                t0_ms=t0, ticks=ticks)
    trades = _trade_rows(runs, bars)
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
    note = short_span_note(len(bars) * bars.interval_ms / 86_400_000)
    short = f'<p class="note">{html.escape(note)}</p>\n' if note is not None else ""
    # a run without risk has no preset: "-", as the table says (not Python's None)
    info = " &middot; ".join(f"{html.escape(str(k))}: {html.escape('-' if v is None else str(v))}"
                             for k, v in meta.items())
    legend = ("ticks under the plot = risk actions of the risk-on run (green ACTIVE, orange "
              "REDUCING, red HALTED)" if "on" in runs else "no risk-on run, so no risk actions")
    doc = f"""<!doctype html><html><head><meta charset="utf-8">
<title>liqbot backtest {html.escape(bars.symbol)}</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ddd;padding:4px 8px;font-size:13px;text-align:right}}
td:last-child{{text-align:left}} tr.liq td{{color:#c0392b;font-weight:bold}}
.note{{color:#666;font-size:12px}}</style></head><body>
<h1>liqbot backtest: {html.escape(bars.symbol)}</h1>
<p>{iso(bars.start_ms)} .. {iso(bars.end_ms)} &middot; {info}</p>
<table><tr><th>risk</th><th>return</th><th>max DD</th><th>Sharpe</th><th>liquidations</th>
<th>funding</th><th>fees</th><th>slippage</th><th>trades</th><th>binding interventions</th>
<th>first liquidation</th></tr>
{''.join(rows)}</table>
{short}<p class="note">Time axis in UTC. Price panel: red dots = liquidations; {legend}.</p>
{price}{heat}{lev}{eq}
<h2>Trades ({len(trades)})</h2>
<table><tr><th>time (UTC)</th><th>risk</th><th>side</th><th>qty (base)</th><th>price</th>
<th>notional</th><th>fee</th><th>slippage</th></tr>
{''.join(trades[:1000]) or '<tr><td colspan="8">none</td></tr>'}</table>
<h2>Risk decisions (risk on){' - first 500' if len(timeline) >= 500 else ''}</h2>
<table><tr><th>time</th><th>state</th><th>target &rarr; allowed</th><th>why</th></tr>
{''.join(timeline) or '<tr><td colspan="4">none</td></tr>'}</table>
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
