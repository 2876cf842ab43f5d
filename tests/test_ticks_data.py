"""Tick data: Binance Vision trades / aggTrades files (real layouts, with and without a
header row), a dataset's tick tables, aggregation into bars, and the synthetic tick mode."""

import io
import zipfile

import numpy as np
import pytest

from bot.data import dataset as ds_io
from bot.data.bars import MINUTE_MS, Trades
from bot.data.synthetic import SynthSpec, generate, spec_with
from bot.data.synthetic_ticks import add_ticks
from bot.data.trades import aggregate, bars_of, from_tables, load_files
from bot.errors import DataError

T0 = 1760054400000  # 2025-10-10T00:00Z
# USD-M trades rows as Binance Vision ships them (header row in files since 2022)
TRADES_HEAD = "id,price,qty,quote_qty,time,is_buyer_maker"
TRADES_ROWS = [
    f"6689034156,121880.1,0.002,243.7602,{T0 + 17},true",
    f"6689034157,121880.2,0.150,18282.03,{T0 + 17},false",
    f"6689034158,121880.2,0.004,487.5208,{T0 + 233},false",
    f"6689034159,121879.9,1.250,152349.875,{T0 + 59_998},true",
    f"6689034160,121875.0,0.031,3778.125,{T0 + 60_000},true",
]
AGG_HEAD = ("agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
            "is_buyer_maker")


def zipped(path, text):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(path.name.replace(".zip", ".csv"), text)
    path.write_bytes(buf.getvalue())
    return path


def test_trades_zip_with_header(tmp_path):
    p = zipped(tmp_path / "BTCUSDT-trades-2025-10-10.zip", "\n".join([TRADES_HEAD, *TRADES_ROWS])
               + "\n")
    t = load_files([p])
    tr = t.trades
    assert t.symbol == "BTCUSDT" and len(t) == 5 and len(t.liq_ts) == 0
    assert tr.ts.dtype == np.int64 and tr.price.dtype == np.float64 and tr.side.dtype == np.int8
    assert tr.ts.tolist() == [T0 + 17, T0 + 17, T0 + 233, T0 + 59_998, T0 + 60_000]
    assert tr.price.tolist() == [121880.1, 121880.2, 121880.2, 121879.9, 121875.0]
    assert tr.qty.tolist() == [0.002, 0.15, 0.004, 1.25, 0.031]
    assert tr.side.tolist() == [-1, 1, 1, -1, -1]          # is_buyer_maker true: taker sold


def test_agg_trades_without_header_in_any_file_order(tmp_path):
    day2 = tmp_path / "BTCUSDT-aggTrades-2025-10-11.csv"
    day2.write_text(f"2874460001,110500.0,0.5,6689100001,6689100003,{T0 + 86_400_000},false\n")
    day1 = tmp_path / "BTCUSDT-aggTrades-2025-10-10.csv"
    day1.write_text(f"{AGG_HEAD}\n2874457931,121880.1,0.010,6689034156,6689034156,{T0 + 17},true\n"
                    f"2874457932,121880.2,0.154,6689034157,6689034158,{T0 + 233},false\n")
    t = load_files([day2, day1])
    assert t.trades.ts.tolist() == [T0 + 17, T0 + 233, T0 + 86_400_000]
    assert t.trades.qty.tolist() == [0.01, 0.154, 0.5]
    assert t.trades.side.tolist() == [-1, 1, 1]


def test_microsecond_times_become_ms(tmp_path):
    p = tmp_path / "BTCUSDT-trades-2025-10-10.csv"
    p.write_text(f"1,100.0,1.0,100.0,{(T0 + 5) * 1000 + 999},false\n"
                 f"2,100.5,1.0,100.5,{(T0 + 6) * 1000},true\n")
    assert load_files([p]).trades.ts.tolist() == [T0 + 5, T0 + 6]


@pytest.mark.parametrize(("row", "problem", "line", "column"), [
    (f"6689034158,abc,0.004,487.52,{T0 + 233},false", "expected a number", 4, "price"),
    (f"6689034158,121880.2,-0.004,487.52,{T0 + 233},false", "qty must be positive", 4, "qty"),
    (f"6689034158,121880.2,0.004,487.52,{T0 + 1},false", "back in time", 4, "time"),
    (f"6689034157,121880.2,0.004,487.52,{T0 + 233},false", "does not increase", 4, "id"),
    (f"6689034158,121880.2,0.004,487.52,{T0 + 233},maybe", "true or false", 4,
     "is_buyer_maker"),
    ("6689034158,121880.2,0.004", "expected 6 columns", 4, None),
])
def test_bad_rows_name_file_row_and_column(tmp_path, row, problem, line, column):
    p = tmp_path / "BTCUSDT-trades-2025-10-10.csv"
    p.write_text("\n".join([TRADES_HEAD, *TRADES_ROWS[:2], row, *TRADES_ROWS[3:]]) + "\n")
    with pytest.raises(DataError) as e:
        load_files([p])
    assert problem in str(e.value) and e.value.row == line and e.value.column == column
    assert str(p) in str(e.value)


# --- streaming: a file read in many small batches (block_size bytes of CSV each) ----------

N_ROWS = 40
SMALL_BLOCK = 256           # bytes: ~5 rows a batch, so N_ROWS rows span ~8 batches


def stream_rows(n=N_ROWS):
    """Rows with hand-checkable values: id 1000+i, price 100+0.5i, qty 0.001(i+1), time
    T0+7i, taker sold on even rows."""
    return [f"{1000 + i},{100 + 0.5 * i},{0.001 * (i + 1):.3f},{(100 + 0.5 * i) * 0.001 * (i + 1):.6f},"
            f"{T0 + 7 * i},{'true' if i % 2 == 0 else 'false'}" for i in range(n)]


def write_stream_file(path, rows, header=True, eol="\n"):
    text = eol.join(([TRADES_HEAD] if header else []) + rows) + eol
    if path.name.endswith(".gz"):
        import gzip
        path.write_bytes(gzip.compress(text.encode()))
    elif path.name.endswith(".zip"):
        zipped(path, text)
    else:
        path.write_text(text, newline="")
    return path


@pytest.mark.parametrize("name", ["BTCUSDT-trades-2025-10-10.csv",
                                  "BTCUSDT-trades-2025-10-10.csv.gz",
                                  "BTCUSDT-trades-2025-10-10.zip"])
@pytest.mark.parametrize(("header", "eol"), [(True, "\n"), (False, "\n"), (True, "\r\n")])
def test_small_batches_give_the_same_ticks(tmp_path, name, header, eol):
    from bot.data import binance_vision as bv
    from bot.data.csvfile import CsvStream

    p = write_stream_file(tmp_path / name, stream_rows(), header, eol)
    with CsvStream(p, bv.SPECS["trades"], block_size=SMALL_BLOCK) as s:
        firsts = [b.first_line for b in s]
    assert len(firsts) >= 6 and firsts[0] == (2 if header else 1)   # really many batches
    i = np.arange(N_ROWS)
    for block in (SMALL_BLOCK, 1 << 20):
        t = load_files([p], block_size=block).trades
        assert t.ts.tolist() == (T0 + 7 * i).tolist()
        assert t.price.tolist() == (100 + 0.5 * i).tolist()
        assert t.qty.tolist() == [float(f"{0.001 * (k + 1):.3f}") for k in range(N_ROWS)]
        assert t.side.tolist() == [-1, 1] * (N_ROWS // 2)


def _spoil(rows, k, problem):
    """Row k made bad in one way; returns (rows, message part, column)."""
    f = rows[k].split(",")
    prev = rows[k - 1].split(",")
    if problem == "number":
        f[1] = "abc"
        what, col = "expected a number, got 'abc'", "price"
    elif problem == "bool":
        f[5] = "maybe"
        what, col = "true or false", "is_buyer_maker"
    elif problem == "empty":
        f[2] = ""
        what, col = "empty or NaN value", "qty"
    elif problem == "nan":
        f[3] = "nan"
        what, col = "empty or NaN value", "quote_qty"
    elif problem == "negative":
        f[2] = "-0.5"
        what, col = "qty must be positive, got -0.5", "qty"
    elif problem == "back":
        f[4] = str(int(prev[4]) - 1)
        what, col = "timestamp goes back in time", "time"
    elif problem == "unit":
        f[4] = str(int(f[4]) * 1000)
        what, col = "timestamp unit changes from ms to us", "time"
    elif problem == "id":
        f[0] = prev[0]
        what, col = f"id {prev[0]} does not increase (previous {prev[0]})", "id"
    else:  # a short row
        f = f[:3]
        what, col = "expected 6 columns, got 3", None
    return [*rows[:k], ",".join(f), *rows[k + 1:]], what, col


@pytest.mark.parametrize("problem", ["number", "bool", "empty", "nan", "negative", "back",
                                     "unit", "id", "short"])
@pytest.mark.parametrize("header", [True, False])
def test_bad_row_in_any_batch_names_its_line(tmp_path, problem, header):
    # every data row from the 2nd on, so rows on both sides of each batch boundary are hit
    p = tmp_path / "BTCUSDT-trades-2025-10-10.csv"
    for k in range(1, N_ROWS):
        rows, what, col = _spoil(stream_rows(), k, problem)
        write_stream_file(p, rows, header)
        with pytest.raises(DataError) as e:
            load_files([p], block_size=SMALL_BLOCK)
        line = k + 2 if header else k + 1
        assert what in str(e.value) and (e.value.row, e.value.column) == (line, col), (k, e.value)


def test_compressed_stream_limits_and_corruption(tmp_path, monkeypatch):
    import gzip

    from bot.data import csvfile

    # a gzip bomb of valid rows: stopped while streaming, the limit named
    bomb = tmp_path / "BTCUSDT-trades-2025-10-10.csv.gz"
    bomb.write_bytes(gzip.compress((TRADES_HEAD + "\n" + TRADES_ROWS[0] + "\n" * 3).encode()
                                   + (TRADES_ROWS[0] + "\n").encode() * 200_000))
    monkeypatch.setattr(csvfile, "RATIO_FLOOR", 1 << 20)
    with pytest.raises(DataError, match="compression ratio .* above the 100:1 limit"):
        load_files([bomb], block_size=SMALL_BLOCK)
    # a truncated gzip whose readable part holds a bad row: the file is blamed, not the row
    rows, _, _ = _spoil(stream_rows(), 3, "negative")
    cut = tmp_path / "BTCUSDT-trades-2025-10-11.csv.gz"
    whole = gzip.compress(("\n".join([TRADES_HEAD, *rows]) + "\n").encode())
    cut.write_bytes(whole[:-40])
    with pytest.raises(DataError) as e:
        load_files([cut], block_size=SMALL_BLOCK)
    assert "not a readable gzip file (truncated or corrupt)" in str(e.value) and e.value.row is None
    # intact, the same bad row is named
    cut.write_bytes(whole)
    with pytest.raises(DataError) as e:
        load_files([cut], block_size=SMALL_BLOCK)
    assert e.value.row == 5 and e.value.column == "qty"


def test_overlapping_mixed_and_wrong_kind_files(tmp_path):
    a = tmp_path / "BTCUSDT-trades-2025-10-10.csv"
    a.write_text("\n".join([TRADES_HEAD, *TRADES_ROWS]) + "\n")
    b = tmp_path / "BTCUSDT-trades-2025-10-10-copy.csv"
    b.write_text("\n".join([TRADES_HEAD, *TRADES_ROWS[3:]]) + "\n")
    with pytest.raises(DataError, match="overlaps"):
        load_files([a, b])
    c = tmp_path / "BTCUSDT-aggTrades-2025-10-11.csv"
    c.write_text(f"1,100.0,1.0,1,1,{T0 + 86_400_000},false\n")
    with pytest.raises(DataError, match="mixes trades and aggTrades"):
        load_files([a, c])
    k = tmp_path / "BTCUSDT-1m-2025-10-10.csv"
    k.write_text(f"{T0},1,2,0.5,1.5,10,{T0 + 59_999},15,3,5,7.5,0\n")
    with pytest.raises(DataError, match="tick replay reads trades or aggTrades"):
        load_files([k])
    bad = tmp_path / "my trades.csv"          # no symbol in the name: the ticks would be
    bad.write_text("\n".join([TRADES_HEAD, *TRADES_ROWS]) + "\n")   # 'MY TRADES.CSV'
    with pytest.raises(DataError, match="no symbol in the file name") as e:
        load_files([bad])
    assert str(bad) in str(e.value)


def test_dataset_tables_are_checked():
    good = {"ts": np.array([T0, T0 + 1, T0 + 1]), "price": np.array([100.0, 101.0, 99.0]),
            "qty": np.array([1.0, 2.0, 0.5]), "side": np.array([1, -1, 1], np.int8)}
    t = from_tables("BTCUSDT", {"trades": good}, "var/ds")
    assert t.trades.price.tolist() == [100.0, 101.0, 99.0] and len(t.liq_ts) == 0
    for col, value, row, problem in (("side", 0, 2, "side must be 1 or -1"),
                                     ("price", np.nan, 2, "price must be a positive"),
                                     ("ts", T0 - 5, 2, "back in time")):
        bad = {k: v.copy() for k, v in good.items()}
        bad[col][1] = value
        with pytest.raises(DataError) as e:
            from_tables("BTCUSDT", {"trades": bad}, "var/ds")
        assert problem in str(e.value) and e.value.row == row and e.value.column == col
        assert "var/ds/trades.parquet" in str(e.value)
    with pytest.raises(DataError, match="no trades table"):
        from_tables("BTCUSDT", {}, "var/ds")
    # an int64 side of 257 must not wrap to int8's 1 and pass
    wide = dict(good, side=np.array([1, 257, 1], np.int64))
    with pytest.raises(DataError) as e:
        from_tables("BTCUSDT", {"trades": wide}, "var/ds")
    assert "257 does not fit int8" in str(e.value) and e.value.row == 2


def test_aggregate_by_hand():
    # minute 0: 100 (buy 1), 102 (sell 2), 99 (buy 1); minute 1 has no trade; minute 2: 101
    ts = np.array([T0, T0 + 10, T0 + 59_999, T0 + 120_000])
    tr = Trades("BTCUSDT", ts, np.array([100.0, 102.0, 99.0, 101.0]),
                np.array([1.0, 2.0, 1.0, 0.5]), np.array([1, -1, 1, -1], np.int8))
    bars, starts = bars_of(tr, MINUTE_MS)
    assert bars.ts.tolist() == [T0, T0 + 120_000] and starts.tolist() == [0, 3, 4]
    assert [bars[c][0] for c in ("open", "high", "low", "close")] == [100.0, 102.0, 99.0, 99.0]
    assert bars["volume"].tolist() == [4.0, 0.5]
    assert bars["quote_volume"].tolist() == [100.0 + 204.0 + 99.0, 50.5]
    assert bars["taker_buy_volume"].tolist() == [2.0, 0.0]
    assert bars["taker_buy_quote_volume"].tolist() == [199.0, 0.0]
    assert bars["trades"].tolist() == [3, 1]
    # the same as the importer's aggregation (Trades.to_bars)
    ref = tr.to_bars()
    for c in ref.names:
        assert np.array_equal(ref[c], bars[c]), c
    assert aggregate(ts, tr.price, tr.qty, tr.side, MINUTE_MS)[2].tolist() == [0, 3, 4]


SMALL = spec_with(SynthSpec(seed=2, days=1, crowding="long"), base_trades=60.0)


def test_synthetic_ticks_reproduce_the_bars():
    plain = generate(SMALL)
    ds = add_ticks(plain)
    b, t = ds.bars, ds.tables["trades"]
    # OHLC, counts and every non-volume column are the bar run's, bit for bit
    for c in plain.bars.names:
        if c not in ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"):
            assert np.array_equal(plain.bars[c], b[c], equal_nan=True), c
    assert int(b["trades"].sum()) == len(t["ts"])
    # base volumes per side kept (to rounding); quote volumes are the ticks' own
    for c in ("volume", "taker_buy_volume"):
        np.testing.assert_allclose(b[c], plain.bars[c], rtol=1e-12)
    agg, _ = bars_of(Trades("BTCUSDT", t["ts"], t["price"], t["qty"], t["side"]), MINUTE_MS)
    for c in agg.names:
        assert np.array_equal(agg[c], b[c]), c
    # every tick inside its minute's range
    k = (t["ts"] - b.ts[0]) // MINUTE_MS
    assert np.all(t["price"] <= b["high"][k]) and np.all(t["price"] >= b["low"][k])
    # liquidation ticks: the truth, timed at the first trade of the minute reaching the price
    liq, truth = ds.tables["liquidations"], ds.tables["truth_liquidations"]
    assert len(liq["ts"]) == len(truth["ts"]) > 0
    np.testing.assert_array_equal(np.sort(liq["notional"]), np.sort(truth["notional"]))
    for col, side in (("liq_long_notional", 1), ("liq_short_notional", -1)):
        m = liq["side"] == side
        per_bar = np.bincount((liq["ts"][m] - b.ts[0]) // MINUTE_MS, weights=liq["notional"][m],
                              minlength=len(b))
        np.testing.assert_allclose(per_bar, b[col], rtol=1e-12, atol=1e-6)
    for i in range(len(liq["ts"])):
        m = int((liq["ts"][i] - b.ts[0]) // MINUTE_MS)
        lo, hi = np.searchsorted(t["ts"], [b.ts[m], b.ts[m] + MINUTE_MS])
        px = t["price"][lo:hi]
        reach = px <= liq["price"][i] if liq["side"][i] > 0 else px >= liq["price"][i]
        assert reach.any()
        assert t["ts"][lo + int(np.argmax(reach))] == liq["ts"][i]


def test_synthetic_ticks_are_deterministic_and_round_trip(tmp_path):
    a, b = add_ticks(generate(SMALL)), add_ticks(generate(SMALL))
    for name in ("trades", "liquidations"):
        for c in a.tables[name]:
            assert np.array_equal(a.tables[name][c], b.tables[name][c])
    ds_io.save(a, tmp_path / "d")
    back = ds_io.load(tmp_path / "d")
    t = from_tables("BTCUSDT", back.tables, str(tmp_path / "d"))
    assert np.array_equal(t.trades.price, a.tables["trades"]["price"])
    assert np.array_equal(t.liq_ts, a.tables["liquidations"]["ts"])
    assert back.meta["ticks"]["trades"] == len(t)
