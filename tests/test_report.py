"""The backtest HTML report: UTC date axis, trade list, liquidation and risk-action markers,
the heatmap panel, risk off vs on; self-contained (no external reference)."""

from __future__ import annotations

import base64
import re
import struct
import zlib

import numpy as np

from backtests.report import _png, _utc


def test_png_encoder_round_trip():
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 0] = (255, 0, 0)
    img[1, 2] = (1, 2, 3)
    png = _png(img)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", png[16:24])
    assert (w, h) == (3, 2)
    idat = png[png.index(b"IDAT") + 4: png.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    assert raw == b"\x00" + img[0].tobytes() + b"\x00" + img[1].tobytes()


def test_utc_axis_labels():
    assert _utc(1_767_225_600_000, 0.0) == "01-01 00:00"        # 2026-01-01T00:00Z
    assert _utc(1_767_225_600_000, 36.5) == "01-02 12:30"


def test_report_of_a_cascade_off_vs_on(cli, tmp_path):
    out = tmp_path / "r.html"
    r = cli("backtest", "cascade-long", "--strategy", "hold", "--param", "side=long",
            "--param", "leverage=10", "--risk", "compare", "--preset", "balanced",
            "--report", str(out))
    assert r.code == 0, r.err
    doc = out.read_text()
    # self-contained: no http(s) reference, no script
    assert not re.search(r"(src|href)=\"https?:", doc) and "<script" not in doc
    # UTC date axis (MM-DD HH:MM) instead of hours since start
    labels = re.findall(r'text-anchor="middle">(\d\d-\d\d \d\d:\d\d)</text>', doc)
    assert labels[:6] == ["01-01 00:00", "01-01 14:23", "01-02 04:47", "01-02 19:11",
                          "01-03 09:35", "01-03 23:59"]
    # the heatmap panel: an inline PNG of the density with the close on top
    m = re.search(r'href="data:image/png;base64,([^"]+)"', doc)
    assert m
    png = base64.b64decode(m.group(1))
    w, h = struct.unpack(">II", png[16:24])
    assert h == 120 and 250 <= w <= 310
    assert "liquidation map density" in doc
    # three days of bars: the annualised Sharpe column is flagged, as in the table
    assert '<p class="note">Sharpe and Sortino are annualised from 3 day(s) of bars: ' \
           'indicative only on fewer than 30 days</p>' in doc
    # risk off vs on: both equity series and a metrics row each
    assert doc.count(">risk off</text>") == 2 and doc.count(">risk on</text>") == 2
    rows = re.findall(r"<tr><td>(off|on)</td><td>([+-][\d.]+)%</td>", doc)
    assert [x[0] for x in rows] == ["off", "on"]
    assert "risk_off_return" not in doc and len({v for _, v in rows}) == 2   # two different runs
    # trade list: every fill of both runs, liquidations highlighted
    n_trades = int(re.search(r"<h2>Trades \((\d+)\)</h2>", doc).group(1))
    trade_rows = re.findall(r'<tr class="(liq|)"><td>(2026-[^<]+)</td><td>(off|on)</td>', doc)
    assert len(trade_rows) == n_trades >= 3
    assert {t[2] for t in trade_rows} == {"off", "on"}
    assert [t[1] for t in trade_rows] == sorted(t[1] for t in trade_rows)
    liq_rows = [t for t in trade_rows if t[0] == "liq"]
    n_liq = [int(x) for x in re.findall(r"<td>(\d+)</td><td>[-\d,]+</td><td>[-\d,]+</td>"
                                        r"<td>[-\d,]+</td><td>\d+</td><td>\d+</td>", doc)]
    assert sum(n_liq) == len(liq_rows)          # the metrics' liquidation counts
    # liquidation markers (circles with a tooltip) and risk-action ticks under the plots
    assert doc.count("off: liquidated at") == len(liq_rows)
    ticks = re.findall(r'class="risk-action"><title>([^<]+)</title>', doc)
    decisions = re.findall(r"<tr><td>(2026-[^<]+)</td><td>(ACTIVE|REDUCING|HALTED)</td>", doc)
    assert decisions and len(decisions) <= 500
    # one tick per risk-on decision on each of the price, leverage and equity panels
    assert ticks[:len(decisions)] == [f"{t} {s}" for t, s in decisions]
    assert len(ticks) % 3 == 0 and len(ticks) // 3 >= len(decisions)


def test_a_risk_off_report_says_no_preset_and_no_risk_actions(cli, tmp_path):
    """Risk off: the header read 'preset: None' (Python's) and the legend described the
    risk actions of a risk-on run that was not there."""
    out = tmp_path / "r.html"
    r = cli("backtest", "calm", "--strategy", "hold", "--risk", "off", "--report", str(out))
    assert r.code == 0, r.err
    doc = out.read_text()
    assert "preset: -" in doc and "None" not in doc
    assert "red dots = liquidations; no risk-on run, so no risk actions.</p>" in doc
    assert "ticks under the plot" not in doc
