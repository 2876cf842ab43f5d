"""Loaders on the real Binance files in ../shared/data (skipped when absent)."""

import csv
import gzip
import io

import numpy as np
import pytest

from bot.data import binance_vision as bv
from bot.data.importer import build_dataset
from bot.data.stylized import cascade_facts
from tests.conftest import shared_file

KLINE_CASES = [
    # file, rows, first (ts, open), last (ts, close), volume sum (base), trades sum
    ("BTCUSDT-1m-2025-10-08_to_2025-10-12.csv", 7200, (1759881600000, 121286.6),
     (1760313540000, 114894.4), 1064259.425, 26374024),
    ("BTCUSDT-1m-2025-10-10T1848Z_to_2025-10-11T0123Z.csv", 396, (1760122080000, 117440.4),
     (1760145780000, 111433.0), 262318.646, 5890514),
    ("BTCUSDT-1m-2026-02-03_to_2026-02-07.csv", 7200, (1770076800000, 78692.5),
     (1770508740000, 69254.2), 2096786.316, 62749238),
    ("BTCUSDT-1m-2026-02-05T1932Z_to_2026-02-06T0216Z.csv", 405, (1770319920000, 65970.0),
     (1770344160000, 64945.5), 329597.137, 8593797),
    ("alts/LTCUSDT-1m-2026-02.csv.gz", 40320, (1769904000000, 59.49), (1772323140000, 54.37),
     61265074.647, 11427525),
]


@pytest.mark.parametrize(("name", "rows", "first", "last", "vol", "trades"), KLINE_CASES)
def test_kline_files(name, rows, first, last, vol, trades):
    path = shared_file("binance_um", "klines_1m", *name.split("/"))
    f = bv.load_file(path)
    assert f.kind == "klines" and f.table.has_header
    b = bv.kline_bars(f)
    assert len(b) == rows and b.interval_ms == 60_000
    assert (int(b.ts[0]), float(b["open"][0])) == first
    assert (int(b.ts[-1]), float(b.close[-1])) == last
    assert b["volume"].sum() == pytest.approx(vol, abs=1e-6)
    assert int(b["trades"].sum()) == trades
    # independent check with the csv module
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if name.endswith(".gz") else raw.decode()
    body = list(csv.reader(io.StringIO(text)))[1:]
    assert len(body) == rows
    assert sum(float(r[5]) for r in body) == pytest.approx(vol, abs=1e-6)


def test_window_is_contained_byte_identical_in_five_day_file():
    d = ("binance_um", "klines_1m")
    ds = build_dataset([shared_file(*d, "BTCUSDT-1m-2025-10-08_to_2025-10-12.csv"),
                        shared_file(*d, "BTCUSDT-1m-2025-10-10T1848Z_to_2025-10-11T0123Z.csv")])
    assert len(ds.bars) == 7200  # overlapping identical rows are kept once


def test_funding_file_and_alignment():
    fpath = shared_file("binance_um", "funding", "BTCUSDT_funding_2020-2026.csv")
    f = bv.load_file(fpath)
    assert f.kind == "fundingRate" and len(f.table) == 7119
    ts, rate = bv.funding_events(f)
    assert ts[0] == 1577836800000 and rate[0] == -0.00012359
    assert rate.min() == -0.003  # 2020-03-13 08:00, the floor
    assert int(ts[np.argmin(rate)]) == 1584086400000
    kl = shared_file("binance_um", "klines_1m", "BTCUSDT-1m-2025-10-08_to_2025-10-12.csv")
    bars = build_dataset([kl, fpath]).bars
    placed = np.flatnonzero(np.isfinite(bars["funding_rate"]))
    assert len(placed) == 15  # 5 days x 3 settlements
    assert np.all(bars.ts[placed] % (8 * 3_600_000) == 0)


def test_real_cascade_facts_match_published_figures():
    d = ("binance_um", "klines_1m")
    oct10 = build_dataset([shared_file(*d, "BTCUSDT-1m-2025-10-10T1848Z_to_2025-10-11T0123Z.csv")])
    f = cascade_facts(oct10.bars)
    assert f.worst_1m == pytest.approx(-0.0615, abs=5e-5)
    assert f.taker_buy_share == pytest.approx(0.4448, abs=1e-4)
    assert f.peak_trades == 131279
    feb = build_dataset([shared_file(*d, "BTCUSDT-1m-2026-02-05T1932Z_to_2026-02-06T0216Z.csv")])
    g = cascade_facts(feb.bars)
    assert g.worst_1m == pytest.approx(-0.0130, abs=5e-5)
    assert g.volume_spike == pytest.approx(6.96, abs=0.01)


def test_import_and_info_cli_on_real_file(cli, tmp_path):
    kl = shared_file("binance_um", "klines_1m", "BTCUSDT-1m-2025-10-08_to_2025-10-12.csv")
    r = cli("data", "import", kl, "--out", tmp_path / "ds")
    assert r.code == 0, r.err
    r = cli("data", "info", tmp_path / "ds", "--json")
    assert r.code == 0
    import json
    s = json.loads(r.out)
    assert s["rows"] == 7200 and s["gaps"] == [] and s["timeframe"] == "1m"
    assert s["moves"]["worst_bar"] == {"ts": "2025-10-10T21:19:00Z",
                                       "low_over_open": pytest.approx(-0.06147, abs=1e-5)}
    r = cli("data", "info", tmp_path / "ds")
    assert "worst 1m bar -6.15% (low / open) at 2025-10-10T21:19:00Z" in " ".join(r.out.split())
