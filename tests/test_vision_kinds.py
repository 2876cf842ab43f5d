"""Every Binance Vision kind through `liqbot data import`, in Vision's own layouts (with and
without header rows), and how each attaches to the bar grid."""

import io
import zipfile

import numpy as np
import pytest

from bot.data import binance_vision as bv
from bot.data.importer import build_dataset
from bot.errors import DataError

T0 = 1760054400000  # 2025-10-10T00:00Z
KHEAD = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
         "taker_buy_volume,taker_buy_quote_volume,ignore")


def kline_rows(n, base, vol="10"):
    flow = "1000,5,4,400" if vol != "0" else "0,0,0,0"      # mark klines carry no volume
    return [f"{T0 + i * 60000},{base + i},{base + i + 2},{base + i - 1},{base + i + 1},{vol},"
            f"{T0 + i * 60000 + 59999},{flow},0" for i in range(n)]


def write(path, text, zipped=False):
    if zipped:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(path.name.replace(".zip", ".csv"), text)
        path.write_bytes(buf.getvalue())
    else:
        path.write_text(text)
    return path


@pytest.fixture
def files(tmp_path):
    d = tmp_path
    (d / "markPriceKlines").mkdir()
    (d / "premiumIndexKlines").mkdir()
    return [
        write(d / "BTCUSDT-1m-2025-10-10.zip", "\n".join([KHEAD, *kline_rows(10, 100)]) + "\n",
              zipped=True),
        # mark klines in the old header-less layout
        write(d / "markPriceKlines" / "BTCUSDT-1m-2025-10-10.csv",
              "\n".join(kline_rows(10, 200, vol="0")) + "\n"),
        write(d / "premiumIndexKlines" / "BTCUSDT-1m-2025-10-10.csv",
              "\n".join([KHEAD] + [f"{T0 + i * 60000},-0.0001,0.0002,-0.0003,0.00015,0,"
                                   f"{T0 + i * 60000 + 59999},0,10,0,0,0" for i in range(10)])
              + "\n"),
        write(d / "BTCUSDT-metrics-2025-10-10.csv",
              "create_time,symbol,sum_open_interest,sum_open_interest_value,"
              "count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,"
              "count_long_short_ratio,sum_taker_long_short_vol_ratio\n"
              "2025-10-10 00:00:00,BTCUSDT,80000,8e9,1.1,1.2,1.8,0.9\n"
              "2025-10-10 00:05:00,BTCUSDT,81000,8.1e9,1.1,1.3,1.9,0.9\n"),
        write(d / "BTCUSDT-liquidationSnapshot-2025-10-10.csv",
              "time,side,order_type,time_in_force,original_quantity,price,average_price,"
              "order_status,last_fill_quantity,accumulated_fill_quantity\n"
              f"{T0 + 61_000},SELL,LIMIT,IOC,2,99,100,FILLED,2,2\n"
              f"{T0 + 62_000},BUY,LIMIT,IOC,1,101,102,FILLED,1,1\n"
              f"{T0 + 119_999},SELL,LIMIT,IOC,1,99,98,FILLED,0.5,0.5\n"),
        # aggTrades without a header row
        write(d / "BTCUSDT-aggTrades-2025-10-10.csv",
              f"1,100.5,0.2,1,1,{T0 + 1000},true\n2,100.7,0.3,2,3,{T0 + 2000},false\n"),
        write(d / "BTCUSDT-fundingRate-2025-10.csv",
              "calc_time,funding_interval_hours,last_funding_rate\n"
              f"{T0},8,0.0001\n{T0 + 8 * 3_600_000},8,0.0002\n"),
    ]


def test_detect_kinds(files):
    assert [bv.detect_kind(p) for p in files] == [
        "klines", "markPriceKlines", "premiumIndexKlines", "metrics", "liquidationSnapshot",
        "aggTrades", "fundingRate"]


def test_every_kind_attaches_to_the_bar_grid(files):
    ds = build_dataset(files)
    b = ds.bars
    assert len(b) == 10 and b["mark_open"][3] == 203.0 and b["mark_close"][0] == 201.0
    assert b["premium_close"][5] == 0.00015
    # metrics stamped 00:00 visible from bar 00:00's close; the 00:05 one from bar 00:05
    assert b["open_interest"][0] == 80000 and b["open_interest"][4] == 80000
    assert b["open_interest"][5] == 81000 and b["long_short_ratio"][5] == 1.9
    assert b["open_interest_value"][9] == 8.1e9 and b["top_long_short_ratio"][0] == 1.2
    # liquidation snapshots: SELL = longs liquidated, placed in the bar containing them
    assert b["liq_long_notional"][1] == pytest.approx(2 * 100 + 0.5 * 98)
    assert b["liq_short_notional"][1] == pytest.approx(102.0)
    assert b["liq_long_notional"].sum() == pytest.approx(249.0)
    assert b["funding_rate"][0] == 0.0001 and np.isnan(b["funding_rate"][1:]).all()
    t = ds.tables["trades"]
    assert t["side"].tolist() == [-1, 1]            # is_buyer_maker true: the taker sold
    assert t["qty"].tolist() == [0.2, 0.3]
    assert [s["kind"] for s in ds.sources][:2] == ["klines", "markPriceKlines"]
    assert all(len(s["sha256"]) == 64 for s in ds.sources)


def test_trades_alone_make_bars(tmp_path):
    p = write(tmp_path / "BTCUSDT-trades-2025-10-10.csv",
              "id,price,qty,quote_qty,time,is_buyer_maker\n"
              f"1,100,1,100,{T0 + 5},false\n2,101,2,202,{T0 + 59_000},true\n"
              f"3,99,1,99,{T0 + 60_000},true\n")
    b = build_dataset([p]).bars
    assert b["open"].tolist() == [100.0, 99.0] and b["high"][0] == 101.0
    assert b["taker_buy_volume"].tolist() == [1.0, 0.0] and b["trades"].tolist() == [2, 1]


def test_metrics_rows_of_another_symbol_refused(files):
    """A metrics file names its symbol on every row: an ETH file renamed BTCUSDT-... would
    have attached ETH's open interest to BTC's bars."""
    m = files[3]
    m.write_text(m.read_text().replace("00:05:00,BTCUSDT", "00:05:00,ETHUSDT"))
    with pytest.raises(DataError) as e:
        build_dataset(files)
    msg = str(e.value)
    assert "row 3, column symbol: symbol 'ETHUSDT', not the file's BTCUSDT (1 row(s)" in msg
    assert m.name in msg



def test_a_funding_history_of_many_symbols_gives_the_grids_rows(files, tmp_path):
    """`symbol,calc_time,funding_interval_hours,last_funding_rate` (one file for 53 symbols,
    as ../shared's funding_all) was 'cannot tell which kind'. The bar grid's symbol's rows
    are kept; a file without that symbol, or one symbol's times going back, exit 2 naming
    the file, and the row."""
    head = "symbol,calc_time,funding_interval_hours,last_funding_rate\n"
    multi = write(tmp_path / "funding_all_3symbols.csv",
                  head + f"AAVEUSDT,{T0},8,0.0009\nBTCUSDT,{T0 - 8 * 3_600_000},8,0.0003\n"
                  f"BTCUSDT,{T0 + 120_000},8,-0.0002\nETHUSDT,{T0},8,0.0005\n")
    assert bv.detect_kind(multi) == "fundingRate"
    b = build_dataset([files[0], multi]).bars
    assert b["funding_rate"][2] == -0.0002 and np.isfinite(b["funding_rate"]).sum() == 1
    gone = write(tmp_path / "funding_all_x.csv", head + f"AAVEUSDT,{T0},8,0.0009\n")
    with pytest.raises(DataError) as e:
        build_dataset([files[0], gone])
    assert str(e.value).endswith("holds no rows of BTCUSDT (1 symbol(s): AAVEUSDT)")
    assert gone.name in str(e.value)
    back = write(tmp_path / "funding_all_y.csv",
                 head + f"AAVEUSDT,{T0},8,0.0009\nBTCUSDT,{T0 + 60_000},8,0.0003\n"
                 f"BTCUSDT,{T0},8,0.0003\nETHUSDT,{T0 - 60_000},8,0.0005\n")
    with pytest.raises(DataError) as e:
        build_dataset([files[0], back])
    assert "row 4, column calc_time: timestamp goes back in time" in str(e.value)

def test_kind_from_the_name_or_a_folder_named_exactly_the_kind(tmp_path):
    """The whole path used to be searched: klines under ~/metrics_study/ were read as
    metrics (and failed on their 12 columns)."""
    k = tmp_path / "metrics_study" / "BTCUSDT-1m-2025-10-10.csv"
    k.parent.mkdir()
    write(k, "\n".join([KHEAD, *kline_rows(3, 100)]) + "\n")
    assert bv.detect_kind(k) == "klines"
    assert len(build_dataset([k]).bars) == 3
    m = tmp_path / "dl" / "markPriceKlines" / "BTCUSDT" / "1m" / "BTCUSDT-1m-2025-10-10.csv"
    assert bv.detect_kind(m) == "markPriceKlines"      # `data download`'s layout
    assert bv.detect_kind(tmp_path / "metrics" / "BTCUSDT-aggTrades-2025-10.zip") == "aggTrades"
