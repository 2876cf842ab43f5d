"""`make efficacy` finds its crash periods, funding and vendor spans by file name, so the same
script scores other crash days laid out like ../shared."""

from __future__ import annotations

from pathlib import Path

from benchmarks.efficacy import VENDOR_FILES, periods


def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("")
    return p


def test_periods_are_found_by_file_name(tmp_path):
    kl, fu, cg = tmp_path / "klines_1m", tmp_path / "funding", tmp_path / "coinglass_4h"
    btc = _touch(kl / "BTCUSDT-1m-2025-10-08_to_2025-10-12.csv")
    eth = _touch(kl / "ETHUSDT-1m-2024-12-30_to_2025-01-02.csv.gz")
    _touch(kl / "BTCUSDT-1m-2025-10-10T1848Z_to_2025-10-11T0123Z.csv")   # an hour window
    _touch(kl / "alts" / "AVAXUSDT-1m-2026-02.csv.gz")                    # calm days only
    fb = _touch(fu / "BTCUSDT_funding_2020-2026.csv")
    for f in VENDOR_FILES:
        _touch(cg / "4h_2025-05-18_to_2025-11-14" / f)
        _touch(cg / "4h_2024-11-13_to_2025-05-12" / f)
    got = periods(kl, fu, cg)
    assert [g[0] for g in got] == ["ETHUSDT 2024-12-30..01-02", "2025-10-08..12"]
    assert got[0][1] == [eth] and got[0][2] == []          # no ETH funding file, no vendor
    span = cg / "4h_2025-05-18_to_2025-11-14"
    assert got[1][1] == [btc, fb] and got[1][2] == [btc, fb] + [span / f for f in VENDOR_FILES]
    assert periods(kl, fu, tmp_path / "none")[1][2] == []   # no vendor directory
