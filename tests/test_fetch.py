"""`liqbot data fetch` through real ccxt against a Binance-USD-M-shaped server on 127.0.0.1."""

import json

import numpy as np
import pytest
from aiohttp import web

from tests.local_http import serve

START = 1759881600000  # 2025-10-08T00:00Z
MARKET = {
    "symbol": "BTCUSDT", "pair": "BTCUSDT", "contractType": "PERPETUAL",
    "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
    "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000", "baseAsset": "BTC",
    "quoteAsset": "USDT", "marginAsset": "USDT", "pricePrecision": 2, "quantityPrecision": 3,
    "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN",
    "underlyingSubType": [], "triggerProtect": "0.0500", "liquidationFee": "0.012500",
    "marketTakeBound": "0.05", "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764",
         "tickSize": "0.10"},
        {"filterType": "LOT_SIZE", "stepSize": "0.001", "maxQty": "1000", "minQty": "0.001"},
        {"filterType": "MARKET_LOT_SIZE", "stepSize": "0.001", "maxQty": "120",
         "minQty": "0.001"},
        {"filterType": "MIN_NOTIONAL", "notional": "100"}],
    "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC", "IOC"]}


def kline(ts: int, mark: bool = False) -> list:
    px = 100_000 + (ts - START) / 60_000
    v = "0" if mark else "2.5"
    return [ts, f"{px}", f"{px + 5}", f"{px - 5}", f"{px + 1}", v, ts + 59_999, "250000", 40,
            "1.0", "100000", "0"]


def fapi_app(calls: list[str], fail_after: int | None = None,
             html_after: int | None = None, html_path: str = "/fapi/v1/klines"
             ) -> web.Application:
    n_minutes = 2 * 1440

    def window(q, step, limit_max):
        start = int(q.get("startTime", START))
        end = int(q.get("endTime", START + n_minutes * 60_000))
        limit = min(int(q.get("limit", limit_max)), limit_max)
        first = max(start, START)
        first += (-first) % step
        out = []
        t = first
        while t <= end and t < START + n_minutes * 60_000 and len(out) < limit:
            out.append(t)
            t += step
        return out

    async def exchange_info(_r):
        return web.json_response({"timezone": "UTC", "serverTime": START, "rateLimits": [],
                                  "exchangeFilters": [], "assets": [], "symbols": [MARKET]})

    def counted(handler):
        async def wrapped(request):
            calls.append(request.path)
            if fail_after is not None and len(calls) > fail_after:
                return web.Response(status=503, text="maintenance")
            return await handler(request)
        return wrapped

    def html(path: str) -> bool:       # a proxy's error page served with status 200: ccxt
        return html_after is not None and html_path == path and \
            calls.count(path) > html_after                       # reads no rows from it

    async def klines(r):
        if html("/fapi/v1/klines"):
            return web.Response(text="<html>error</html>", content_type="text/html")
        return web.json_response([kline(t) for t in window(r.query, 60_000, 1500)])

    async def mark(r):
        if html("/fapi/v1/markPriceKlines"):
            return web.Response(text="<html>error</html>", content_type="text/html")
        return web.json_response([kline(t, True) for t in window(r.query, 60_000, 1500)])

    async def funding(r):
        if html("/fapi/v1/fundingRate"):
            return web.Response(text="<html>error</html>", content_type="text/html")
        return web.json_response([{"symbol": "BTCUSDT", "fundingTime": t,
                                   "fundingRate": "0.00010000", "markPrice": "100000"}
                                  for t in window(r.query, 8 * 3_600_000, 1000)])

    async def oi(r):
        return web.json_response([{"symbol": "BTCUSDT", "sumOpenInterest": f"{80000 + i}",
                                   "sumOpenInterestValue": f"{8e9 + i}", "timestamp": t}
                                  for i, t in enumerate(window(r.query, 300_000, 500))])

    async def ls(r):
        return web.json_response([{"symbol": "BTCUSDT", "longShortRatio": "1.8",
                                   "longAccount": "0.64", "shortAccount": "0.36", "timestamp": t}
                                  for t in window(r.query, 300_000, 500)])

    app = web.Application()
    app.router.add_get("/fapi/v1/exchangeInfo", exchange_info)
    app.router.add_get("/fapi/v1/klines", counted(klines))
    app.router.add_get("/fapi/v1/markPriceKlines", counted(mark))
    app.router.add_get("/fapi/v1/fundingRate", counted(funding))
    app.router.add_get("/futures/data/openInterestHist", counted(oi))
    app.router.add_get("/futures/data/globalLongShortAccountRatio", counted(ls))
    return app


def test_fetch_paginates_and_builds_dataset(cli, tmp_path):
    calls: list[str] = []
    with serve(fapi_app(calls)) as url:
        r = cli("data", "fetch", "--exchange", "binance", "--symbol", "BTCUSDT", "--from",
                "2025-10-08", "--to", "2025-10-09", "--out", tmp_path / "f", "--base-url", url)
    assert r.code == 0, r.err + r.out
    assert calls.count("/fapi/v1/klines") == 3          # 2,880 minutes in pages of 1,000
    assert calls.count("/fapi/v1/markPriceKlines") == 3
    # 576 snapshots in pages of 500, then one empty page proves the end of history
    assert calls.count("/futures/data/openInterestHist") == 3
    from bot.data.dataset import load
    ds = load(tmp_path / "f")
    b = ds.bars
    assert len(b) == 2880 and b.ts[0] == START and b.ts[-1] == START + 2879 * 60_000
    assert b["mark_open"][10] == b["open"][10]
    fr = b["funding_rate"]
    assert np.flatnonzero(np.isfinite(fr)).tolist() == [0, 480, 960, 1440, 1920, 2400]
    # OI snapshot stamped 00:05 is visible from the bar that closes at 00:05 + 1 minute
    oi = b["open_interest"]
    assert np.isnan(oi[:0]).all() and oi[0] == 80000 and oi[4] == 80000 and oi[5] == 80001
    assert b["long_short_ratio"][100] == 1.8


def test_fetch_resumes_after_failure(cli, tmp_path):
    calls: list[str] = []
    args = ("data", "fetch", "--symbol", "BTCUSDT", "--from", "2025-10-08", "--to",
            "2025-10-09", "--series", "ohlcv", "--out", tmp_path / "f")
    with serve(fapi_app(calls, fail_after=1)) as url:
        r = cli(*args, "--base-url", url)
    assert r.code == 2 and "exchange request failed" in r.err
    raw = (tmp_path / "f" / "raw" / "ohlcv.jsonl").read_text().splitlines()
    assert len(raw) == 1 and len(json.loads(raw[0])) == 1000     # first page kept
    calls.clear()
    with serve(fapi_app(calls)) as url:
        r = cli(*args, "--base-url", url)
    assert r.code == 0, r.err
    assert calls == ["/fapi/v1/klines"] * 2     # only the missing pages are requested
    from bot.data.dataset import load
    assert len(load(tmp_path / "f").bars) == 2880


def test_fetch_that_stops_short_of_the_span_exits_2_and_resumes(cli, tmp_path):
    """An unreadable page ended the pagination: exit 0 and a dataset 7h20m short of --to,
    its summary saying "gaps: none"."""
    calls: list[str] = []
    args = ("data", "fetch", "--symbol", "BTCUSDT", "--from", "2025-10-08", "--to",
            "2025-10-08", "--series", "ohlcv", "--out", tmp_path / "f")
    with serve(fapi_app(calls, html_after=1)) as url:
        r = cli(*args, "--base-url", url)
    err = " ".join(r.err.split())
    assert r.code == 2 and "Traceback" not in err
    assert "ohlcv.jsonl: the exchange returned no OHLCV rows after 2025-10-08T16:39:00Z " \
           "(1,000 of 1,440 bars of the span)" in err and "continues from them" in err
    assert not (tmp_path / "f" / "manifest.json").exists()
    calls.clear()
    with serve(fapi_app(calls)) as url:
        r = cli(*args, "--base-url", url)
    assert r.code == 0, r.err
    from bot.data.dataset import load
    assert len(load(tmp_path / "f").bars) == 1440


@pytest.mark.parametrize(("path", "after", "series", "needle"), [
    ("/fapi/v1/markPriceKlines", 1, "mark",
     "mark.jsonl: the exchange returned no mark-price rows after 2025-10-08T16:39:00Z "
     "(1,000 of 1,440 bars of the span)"),
    ("/fapi/v1/fundingRate", 0, "funding",
     "funding.jsonl: the exchange returned no funding rows from 2025-10-08T00:00:00Z on "
     "(0 settlements of the span)"),
])
def test_a_mark_or_funding_series_that_stops_short_exits_2_and_resumes(
        cli, tmp_path, path: str, after: int, series: str, needle: str) -> None:
    """Only the OHLCV pages were checked: an unreadable mark page left the rest of the day
    on trade prices, an unreadable funding page charged no funding (exit 0, "gaps: none")."""
    calls: list[str] = []
    args = ("data", "fetch", "--symbol", "BTCUSDT", "--from", "2025-10-08", "--to",
            "2025-10-08", "--series", f"ohlcv,{series}", "--out", tmp_path / "f")
    with serve(fapi_app(calls, html_after=after, html_path=path)) as url:
        r = cli(*args, "--base-url", url)
    err = " ".join(r.err.split())
    assert r.code == 2 and needle in err and "continues from them" in err, err
    assert not (tmp_path / "f" / "manifest.json").exists()
    with serve(fapi_app([])) as url:
        r = cli(*args, "--base-url", url)
    assert r.code == 0, r.err
    from bot.data.dataset import load
    bars = load(tmp_path / "f").bars
    col = "mark_close" if series == "mark" else "funding_rate"
    assert len(bars) == 1440 and int(np.isfinite(bars[col]).sum()) == (1440 if series == "mark"
                                                                        else 3)


def test_a_span_reaching_the_present_ends_at_the_last_closed_bar(cli, tmp_path, monkeypatch):
    """`--to` today kept the bar still forming: its OHLCV stored as final, and a rerun
    continued after it, so the bar was never corrected."""
    from bot.data import fetch
    now = START + 86_400_000 + 10 * 3_600_000 + 30 * 60_000 + 30_000    # 10-09 10:30:30Z
    monkeypatch.setattr(fetch, "now_ms", lambda: now)
    calls: list[str] = []
    with serve(fapi_app(calls)) as url:
        r = cli("data", "fetch", "--symbol", "BTCUSDT", "--from", "2025-10-08", "--to",
                "2025-10-09", "--series", "ohlcv,mark,funding", "--out", tmp_path / "f",
                "--base-url", url)
        assert r.code == 0, r.err
        from bot.data.dataset import load
        b = load(tmp_path / "f").bars
        assert len(b) == 1440 + 630 and b.ts[-1] == START + 86_400_000 + 629 * 60_000
        raw = [json.loads(x) for x in (tmp_path / "f" / "raw" / "mark.jsonl").open()]
        assert max(row[0] for page in raw for row in page) == b.ts[-1]   # forming: not kept
        r = cli("data", "fetch", "--symbol", "BTCUSDT", "--from", "2025-10-09", "--to",
                "2025-10-10", "--out", tmp_path / "g", "--base-url", url)
        # 2025-10-09 has begun: its first bars closed; a span that starts after now has none
        assert r.code == 0, r.err
        monkeypatch.setattr(fetch, "now_ms", lambda: START + 86_400_000 + 30_000)
        r = cli("data", "fetch", "--symbol", "BTCUSDT", "--from", "2025-10-09", "--to",
                "2025-10-10", "--out", tmp_path / "h", "--base-url", url)
    err = " ".join(r.err.split())
    assert r.code == 2 and "Traceback" not in err
    assert "--from: no 1m bar has closed since 2025-10-09T00:00:00Z yet (the one forming " \
           "now opened at 2025-10-09T00:00:00Z)" in err
