"""The broken-file corpus: every case exits 2 with its exact message and no traceback."""

import io
import zipfile

import pytest

HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
          "taker_buy_volume,taker_buy_quote_volume,ignore")


def row(t: int, o="100.0", h="101.0", lo="99.0", c="100.5", v="2.0", tb="1.0", ct=None):
    ct = t * 60_000 + 59_999 if ct is None else ct
    return f"{t * 60_000},{o},{h},{lo},{c},{v},{ct},200.0,10,{tb},100.0,0"


def kl(*rows: str, header: bool = True) -> bytes:
    return ("\n".join(([HEADER] if header else []) + list(rows)) + "\n").encode()


def zipped(name: str, data: bytes, extra: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
        if extra:
            zf.writestr("other.csv", data)
    return buf.getvalue()


GOOD = [row(t) for t in range(28_000_000, 28_000_003)]
T = 28_000_000
# (file name, content, expected message after "<path>")
CASES = [
    ("nonmono-1m-a.csv", kl(row(T), row(T + 2), row(T + 1)),
     f", row 4, column open_time: timestamp goes back in time: {(T + 1) * 60000} after "
     f"{(T + 2) * 60000} on the previous row"),
    ("dup-1m-a.csv", kl(row(T), row(T + 1), row(T + 1)),
     f", row 4, column open_time: duplicate timestamp: {(T + 1) * 60000} after "
     f"{(T + 1) * 60000} on the previous row"),
    ("gap-1m-a.csv", kl(row(T), row(T + 1), row(T + 5)),
     ": 1 gap(s) in the bars, first: 3 missing bar(s) from 2023-03-28T10:42:00Z; pass "
     "--fill-gaps to fill them (flagged) or --allow-gaps to keep them"),
    ("nan-1m-a.csv", kl(row(T), row(T + 1, c="NaN"), row(T + 2)),
     ", row 3, column close: empty or NaN value"),
    ("negvol-1m-a.csv", kl(row(T), row(T + 1, v="-2.0", tb="0"), row(T + 2)),
     ", row 3, column volume: negative volume -2.0"),
    ("highlow-1m-a.csv", kl(row(T), row(T + 1, h="100.2"), row(T + 2)),
     ", row 3, column high: high 100.2 is below max(open, close) = 100.5"),
    ("lowhigh-1m-a.csv", kl(row(T, lo="100.1"), row(T + 1), row(T + 2)),
     ", row 2, column low: low 100.1 is above min(open, close) = 100.0"),
    ("absurd-1m-a.csv", kl(row(T), row(T + 1, h="1e308"), row(T + 2)),
     ", row 3, column high: price 1e+308 is outside the plausible 1e-12 .. 1e+12 (quote per "
     "base)"),
    ("range-1m-a.csv", kl(row(T), row(T + 1, lo="0.5"), row(T + 2)),
     ", row 3, column high: high 101.0 is more than 100x the low 0.5 in one bar: corrupt, not "
     "a market move"),
    ("truncated-1m-a.zip", zipped("x.csv", kl(*GOOD))[:-30],
     ": not a readable zip archive (truncated or corrupt)"),
    ("cols-1m-a.csv", kl(row(T), row(T + 1).rsplit(",", 1)[0], row(T + 2)),
     ", row 3: expected 12 columns, got 11"),
    ("text-1m-a.csv", kl(row(T), row(T + 1, o="abc"), row(T + 2)),
     ", row 3, column open: expected a number, got 'abc'"),
    ("empty-1m-a.csv", b"", ": file is empty (no data rows)"),
    ("header-1m-a.csv", (HEADER + ",extra\n" + "\n".join(GOOD) + "\n").encode(),
     ", row 1: expected 12 columns for klines, header has 13"),
    ("taker-1m-a.csv", kl(row(T), row(T + 1, tb="3.0"), row(T + 2)),
     ", row 3, column taker_buy_volume: taker_buy_volume 3.0 exceeds volume 2.0"),
    ("mixed-1m-a.csv", kl(row(T), row(T + 1, ct=(T + 1) * 60000 + 299_999), row(T + 2)),
     f", row 3, column close_time: close_time {(T + 1) * 60000 + 299_999} is not open_time + "
     "59999 (mixed intervals?)"),
    ("zeroprice-1m-a.csv", kl(row(T), row(T + 1, lo="0"), row(T + 2)),
     ", row 3, column low: price must be positive, got 0.0"),
    ("noheader-1m-a.csv", kl(row(T), row(T + 1, v="x"), header=False),
     ", row 2, column volume: expected a number, got 'x'"),
    ("BTCUSDT-fundingRate-2025-10.csv",
     b"calc_time,funding_interval_hours,last_funding_rate\n1,8,0.0001\n2,8,oops\n",
     ", row 3, column last_funding_rate: expected a number, got 'oops'"),
    ("BTCUSDT-fundingRate-2025-11.csv",     # written in percent: 5 for 5%
     b"calc_time,funding_interval_hours,last_funding_rate\n1761955200000,8,0.0001\n"
     b"1761984000000,8,-0.03\n1762012800000,8,5\n",
     ", row 4, column last_funding_rate: funding rate 5 per interval is beyond +-0.1: rates are "
     "fractions (0.0001 = 0.01%), not percent"),
    ("BTCUSDT-fundingRate-2025-12.csv",     # in percent at ordinary rates: 0.01 for 0.01%
     b"calc_time,funding_interval_hours,last_funding_rate\n1764547200000,8,0.01\n"
     b"1764576000000,8,0.0125\n1764604800000,8,-0.005\n",
     ", column last_funding_rate: median |funding rate| 0.01 per interval: rates are fractions "
     "(0.0001 = 0.01%), this file looks written in percent (a median of 0.005 = 0.5% per "
     "interval is beyond any sustained real market)"),
    ("BTCUSDT-metrics-2025-10-10.csv",
     b"create_time,symbol,sum_open_interest,sum_open_interest_value,"
     b"count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,count_long_short_ratio,"
     b"sum_taker_long_short_vol_ratio\n2025-10-10 00:05:00,BTCUSDT,1,2,1,1,1,1\n"
     b"2025-13-10 00:10:00,BTCUSDT,1,2,1,1,1,1\n",
     ", row 3, column create_time: expected a time like 2025-10-10 00:05:00, got "
     "'2025-13-10 00:10:00'"),
    ("BTCUSDT-liquidationSnapshot-2023-01-01.csv",
     b"time,side,order_type,time_in_force,original_quantity,price,average_price,order_status,"
     b"last_fill_quantity,accumulated_fill_quantity\n"
     b"1672531200000,SELL,LIMIT,IOC,1,100,100,FILLED,1,1\n"
     b"1672531201000,HOLD,LIMIT,IOC,1,100,100,FILLED,1,1\n",
     ", row 3, column side: side must be BUY or SELL, got 'HOLD'"),
]


def test_corpus_has_at_least_15_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize(("name", "content", "expected"), CASES, ids=[c[0] for c in CASES])
def test_broken_file_exits_2_with_message(cli, tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    r = cli("data", "import", path, "--out", tmp_path / "out")
    assert r.code == 2
    assert "Traceback" not in r.out + r.err
    message = " ".join(r.err.split())  # rich may wrap long lines
    label = f"{path}:x.csv" if name.endswith(".zip") and "truncated" not in name else str(path)
    assert message == " ".join(f"error: {label}{expected}".split())
    assert not (tmp_path / "out").exists()


def test_zip_with_two_members(cli, tmp_path):
    path = tmp_path / "two-1m-a.zip"
    path.write_bytes(zipped("x.csv", kl(*GOOD), extra=True))
    r = cli("data", "import", path, "--out", tmp_path / "out")
    assert r.code == 2 and "expected one CSV inside the zip, found 2" in r.err


def test_gap_fill_and_allow(cli, tmp_path):
    path = tmp_path / "gap-1m-a.csv"
    path.write_bytes(kl(row(T), row(T + 1), row(T + 5)))
    r = cli("data", "import", path, "--out", tmp_path / "f", "--fill-gaps")
    assert r.code == 0
    from bot.data.dataset import load
    b = load(tmp_path / "f").bars
    assert len(b) == 6 and b["filled"].sum() == 3
    r = cli("data", "import", path, "--out", tmp_path / "a", "--allow-gaps")
    assert r.code == 0
    import json
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert man["gaps"] == [{"start": "2023-03-28T10:42:00Z", "end": "2023-03-28T10:45:00Z",
                            "missing": 3}]
