"""Fuzz: generated bad inputs at every boundary (config, CLI options, CSV/zip/Parquet and
manifest files, exchange payloads). Each ends with exit 0 (valid) or 2, no traceback,
nothing non-finite in the results, no canary, nothing written outside the given paths.

Example counts are kept small (about 300 inputs in all) so this file runs in well under a
minute with the in-process CLI.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.config import ConfigError, parse_config
from bot.data import dataset as ds_io
from bot.data.synthetic import SynthSpec, generate
from bot.errors import LiqbotError
from bot.signals.liquidations import MalformedMessage, from_binance_force_order
from bot.signals.stream import bar_row
from tests.test_safety import KHEAD, T0

CANARY = "CANARYfuzz0c8d1f5a9b"
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

weird_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, 1e-300, 1e300, 1e15, 1e16, 125.0, 200.0, 0.5]))
weird_text = st.one_of(
    st.text(max_size=30), st.sampled_from(["nan", "inf", "-inf", "1e999", "", "abc", "0x10",
                                           "../x", "/etc/passwd", "-", "1_000"]))
#: Config values may carry the canary (it must never be echoed); CLI options may not (a
#: user's own option text is fair to quote back).
scalar = st.one_of(weird_floats, st.integers(-2**70, 2**70), st.booleans(), weird_text,
                   st.just(CANARY), st.just(f"https://u:{CANARY}@h/x"))
value = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(
        ["api_key", "token", "x", "seed", "url", "secret_thing"]), inner, max_size=3)),
    max_leaves=6)
plain_value = st.recursive(
    st.one_of(weird_floats, st.integers(-2**70, 2**70), st.booleans(), weird_text),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(weird_text, inner, max_size=3)), max_leaves=6)
SECTIONS = {"mode": None, "data": ["source", "synthetic"], "store": ["url"],
            "exchange": ["name", "symbols", "credentials_file", "testnet", "password"],
            "fills": ["impact_coef", "half_spread_bps", "window_bars", "max_impact"],
            "fees": ["maker", "taker"], "run": ["wallet", "speed", "params"],
            "download": ["timeout_s", "retries"]}


def _finite_json(text: str) -> None:
    """Every JSON document in `text` parses strictly (no NaN/Infinity) and is finite."""
    def bad(tok: str) -> None:
        raise AssertionError(f"non-finite number {tok} in output")
    json.loads(text, parse_constant=bad)


def _clean(r, tmp: Path) -> None:  # noqa: ANN001
    assert r.code in (0, 2), (r.code, r.err[-2000:])
    assert "Traceback" not in r.out + r.err and "unexpected error" not in r.err
    assert CANARY not in r.out + r.err


def _tree_strategy() -> st.SearchStrategy:
    section = st.sampled_from(sorted(SECTIONS))
    return st.dictionaries(section, st.one_of(
        value, st.dictionaries(st.sampled_from(sum((v or [] for v in SECTIONS.values()), [])),
                               value, max_size=3)), max_size=4)


# ---------------------------------------------------------------- config


@FUZZ
@given(tree=_tree_strategy(), env_value=weird_text)
def test_fuzz_config_trees(tree, env_value):
    env = {"LIQBOT_FILLS__IMPACT_COEF": env_value} if env_value else {}
    try:
        cfg = parse_config(tree, "fuzz", env=env)
    except ConfigError as exc:
        assert CANARY not in str(exc)
        assert all(p.count(":") >= 1 for p in exc.problems)
        return
    for f in (cfg.fills.impact_coef, cfg.fills.max_impact, cfg.run.wallet, cfg.download.timeout_s):
        assert math.isfinite(f)
    assert all(re.fullmatch(r"[A-Z0-9]{2,20}", s) for s in cfg.exchange.symbols)


# ---------------------------------------------------------------- CLI options


@FUZZ
@example(entry=100_000.0, qty=1.0, lev=10.0, mmr=None, amount=None, side="long",
         exchange="binance", fee=None)
@example(entry=2_000.0, qty=3.0, lev=20.0, mmr=0.01, amount=None, side="short",
         exchange="bybit", fee=None)
@given(entry=st.floats(1.0, 1e6) | weird_floats, qty=st.floats(1e-3, 50.0) | weird_floats,
       lev=st.floats(1.0, 125.0) | weird_floats,
       mmr=st.none() | st.floats(0.001, 0.1) | weird_floats,
       amount=st.none() | weird_floats, side=st.sampled_from(["long", "short", "long", "up"]),
       exchange=st.sampled_from(["binance", "binance", "bybit", "okx"]),
       fee=st.none() | weird_floats)
def test_fuzz_calc_options(cli, tmp_path, entry, qty, lev, mmr, amount, side, exchange, fee):
    args = ["calc", "liquidation", "--exchange", exchange, "--side", side, "--entry", repr(entry),
            "--qty", repr(qty), "--leverage", repr(lev), "--json"]
    if mmr is not None:
        args += ["--mmr", repr(mmr)]
        if amount is not None:
            args += ["--maint-amount", repr(amount)]
    if fee is not None:
        args += ["--taker-fee", repr(fee)]
    r = cli(*args)
    _clean(r, tmp_path)
    valid = (exchange == "binance" or mmr is not None) and side != "up" and amount is None \
        and fee is None and 1.0 <= entry <= 1e6 and 1e-3 <= qty <= 50.0 and 1.0 <= lev <= 10.0 \
        and (mmr is None or 0.001 <= mmr <= 0.05) and entry * qty <= 1e5   # margin >> maintenance
    if valid:                       # plainly valid options must give an answer
        assert r.code == 0, r.err
    if r.code == 0:
        _finite_json(r.out)
        out = json.loads(r.out)
        s = 1 if side == "long" else -1
        assert s * (out["liquidation_price"] - entry) < 0   # liquidated on the adverse side


@settings(FUZZ, max_examples=20)
@given(seed=st.one_of(st.integers(-2**65, 2**65), weird_text), days=weird_text,
       crowding=weird_text, wallet=weird_floats, frm=weird_text)
def test_fuzz_synth_and_backtest_options(cli, tmp_path, seed, days, crowding, wallet, frm):
    out = tmp_path / "o"
    r = cli("data", "synth", "--seed", str(seed), "--days", days or "0", "--crowding",
            crowding or "x", "--out", out)
    _clean(r, tmp_path)
    assert r.code == 2 or days.strip() in ("1",)  # any valid synth here is one day
    r = cli("backtest", "--scenario", "synthetic:1:long:1", "--wallet", repr(wallet),
            "--from", frm or "x", "--risk", "off", "--json", "-")
    _clean(r, tmp_path)
    if r.code == 0:
        _finite_json(r.out)
    assert {p.name for p in tmp_path.iterdir()} <= {"o"}


# ---------------------------------------------------------------- CSV and zip files


def _kline(i: int, mutate: dict[str, str]) -> str:
    t = T0 + i * 60_000
    p = 100.0 + i
    row = {"open_time": str(t), "open": str(p), "high": str(p + 1), "low": str(p - 1),
           "close": str(p + 0.5), "volume": "10", "close_time": str(t + 59_999),
           "quote_volume": "1000", "count": "5", "taker_buy_volume": "4",
           "taker_buy_quote_volume": "400", "ignore": "0"}
    row.update(mutate)
    return ",".join(row.values()) + "\n"


COLS = KHEAD.strip().split(",")


@FUZZ
@given(n=st.integers(1, 12), muts=st.lists(st.tuples(
    st.integers(0, 11), st.sampled_from(COLS), weird_text), max_size=4),
    header=st.booleans(), swap=st.booleans(), compress=st.sampled_from(["csv", "zip", "gz"]))
def test_fuzz_kline_files(cli, tmp_path, n, muts, header, swap, compress):
    by_row: dict[int, dict[str, str]] = {}
    for i, col, v in muts:
        by_row.setdefault(i, {})[col] = v.replace("\n", " ").replace(",", ";")
    rows = [_kline(i, by_row.get(i, {})) for i in range(n)]
    if swap and n > 2:
        rows[1], rows[2] = rows[2], rows[1]
    text = ((KHEAD if header else "") + "".join(rows)).encode()
    work = tmp_path / "w"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    f = work / f"BTCUSDT-1m-2025-10-10.{compress}"
    if compress == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("BTCUSDT-1m-2025-10-10.csv", text)
        f.write_bytes(buf.getvalue())
    elif compress == "gz":
        import gzip
        f.write_bytes(gzip.compress(text))
    else:
        f.write_bytes(text)
    out = work / "ds"
    r = cli("data", "import", f, "--out", out)
    _clean(r, work)
    assert {p.name for p in work.iterdir()} <= {f.name, "ds"}
    if r.code == 0:
        r = cli("data", "info", out, "--json")
        assert r.code == 0
        _finite_json(r.out)
        assert json.loads(r.out)["timeframe"] == "1m"


@FUZZ
@given(blob=st.binary(max_size=300), cut=st.integers(0, 400), members=st.integers(0, 3))
def test_fuzz_zip_archives(cli, tmp_path, blob, cut, members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k in range(members):
            z.writestr(f"m{k}.csv", KHEAD.encode() + blob)
    data = buf.getvalue()
    data = data[:cut] if cut < len(data) else data + blob
    work = tmp_path / "z"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    f = work / "BTCUSDT-1m-2025-10-10.zip"
    f.write_bytes(data)
    r = cli("data", "import", f, "--out", work / "ds")
    _clean(r, work)
    assert r.code == 2   # never a valid dataset from random bytes


# ---------------------------------------------------------------- Parquet datasets and manifests


@pytest.fixture(scope="module")
def base_ds(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fz") / "base"
    ds = generate(SynthSpec(seed=4, days=1))
    ds_io.save(ds_io.Dataset(ds.bars.take(slice(0, 120)), "synthetic", [],
                             {"truth_liquidations": ds.tables["truth_liquidations"]}), d)
    return d


MANIFEST_KEYS = ["symbol", "interval_ms", "exchange", "tables", "files", "sources", "rows",
                 "format_version", "span"]


@FUZZ
@given(edits=st.dictionaries(st.sampled_from(MANIFEST_KEYS), plain_value, max_size=3),
       drop=st.lists(st.sampled_from(MANIFEST_KEYS), max_size=2))
def test_fuzz_manifests(cli, tmp_path, base_ds, edits, drop):
    d = tmp_path / "m"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(base_ds, d)
    m = json.loads((d / "manifest.json").read_text())
    m.update(edits)
    for k in drop:
        m.pop(k, None)
    (d / "manifest.json").write_text(json.dumps(m))
    r = cli("data", "info", d, "--json")
    _clean(r, tmp_path)
    if r.code == 0:
        _finite_json(r.out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


COLUMN_EDITS = ["open", "high", "low", "close", "volume", "ts", "taker_buy_volume",
                "open_interest", "liq_long_notional"]


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(COLUMN_EDITS), st.integers(0, 119),
                                weird_floats), min_size=1, max_size=3))
def test_fuzz_parquet_values(cli, tmp_path, base_ds, edits):
    bars = ds_io.load(base_ds).bars
    cols = {k: v.copy() for k, v in bars.columns.items()}
    for col, i, v in edits:
        if col == "ts":
            cols["ts"][i] = int(v) if math.isfinite(v) and abs(v) < 9e18 else -1
        else:
            cols[col][i] = v
    d = tmp_path / "p"
    shutil.rmtree(d, ignore_errors=True)
    ds_io.save(ds_io.Dataset(type(bars)(bars.symbol, bars.interval_ms, cols)), d)
    r = cli("data", "info", d, "--json")
    _clean(r, tmp_path)
    if r.code == 0:
        _finite_json(r.out)
        ok = ds_io.load(d).bars
        assert np.isfinite(ok["close"]).all() and (np.diff(ok.ts) > 0).all()


# ---------------------------------------------------------------- exchange payloads


payload_num = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                        st.integers(-10**6, 10**15), weird_text, st.none(), st.booleans())


VALID_FO = {"S": "SELL", "T": 1_760_054_400_000, "ap": "100.5", "z": "2", "s": "BTCUSDT"}


@FUZZ
@example(spoil=None, bad=None, wrap=False)
@given(spoil=st.none() | st.sampled_from(["S", "T", "ap", "z", "e", "o"]),
       bad=st.one_of(payload_num, st.sampled_from(["HOLD", [], {}])), wrap=st.booleans())
def test_fuzz_binance_force_order(spoil, bad, wrap):
    """A real-shaped forceOrder with at most one field spoiled: parsed exactly when intact,
    otherwise either parsed to finite numbers or refused as MalformedMessage."""
    o = dict(VALID_FO)
    msg: dict = {"e": "forceOrder", "o": o}
    if spoil in ("e", "o"):
        msg[spoil] = bad
    elif spoil is not None:
        o[spoil] = bad
    if wrap:
        msg = {"stream": "btcusdt@forceOrder", "data": msg}
    try:
        events = from_binance_force_order(msg)
    except (MalformedMessage, LiqbotError):
        assert spoil is not None, "an intact message was refused"
        return
    assert len(events) == 1
    ev = events[0]
    assert ev.side in ("long", "short")
    assert math.isfinite(ev.price) and math.isfinite(ev.qty) and ev.qty >= 0
    if spoil is None:
        assert (ev.side, ev.price, ev.qty, ev.ts) == ("long", 100.5, 2.0, VALID_FO["T"])


def test_binance_force_order_non_finite_fields():
    for field in ("ap", "z", "T"):
        o = {"S": "SELL", "T": 1_760_054_400_000, "ap": "100", "z": "1", "s": "BTCUSDT"}
        o[field] = "inf"
        with pytest.raises(MalformedMessage):
            from_binance_force_order({"e": "forceOrder", "o": o})


bar_num = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**13),
                    st.none())
VALID_BAR = {"ts": 1_760_054_400_000, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5,
             "volume": 12.0, "mark_close": 100.4, "quote_volume": 1_205.0,
             "taker_buy_volume": 6.0, "funding_rate": float("nan")}


@FUZZ
@example(spoil={}, minute=0)
@given(spoil=st.dictionaries(st.sampled_from(sorted(VALID_BAR)), bar_num, max_size=2),
       minute=st.integers(0, 10**6))
def test_fuzz_daemon_bar_validation(spoil, minute):
    """A valid bar with up to two fields spoiled: accepted exactly when still valid, and an
    accepted bar always has finite, consistent prices."""
    from bot.runtime.daemon import _bar_problem
    from bot.signals import stream as ss
    bar = {**VALID_BAR, "ts": VALID_BAR["ts"] + 60_000 * minute, **spoil}
    try:
        x = bar_row(bar)
    except LiqbotError:
        assert spoil, "an intact bar was refused"
        return
    problem = _bar_problem(x, -1, 60_000)
    if not spoil:
        assert problem == ""
    if problem == "":
        o, h, lo, c = (x[k] for k in (ss.X_OPEN, ss.X_HIGH, ss.X_LOW, ss.X_CLOSE))
        assert all(math.isfinite(v) and v > 0 for v in (o, h, lo, c))
        assert lo <= min(o, c) and h >= max(o, c) and int(x[ss.X_TS]) % 60_000 == 0
        assert math.isfinite(x[ss.X_VOLUME]) and x[ss.X_VOLUME] >= 0


@FUZZ
@given(text=st.one_of(weird_text, st.text(alphabet="[]/\\:=.%{}$ab", max_size=12)),
       which=st.sampled_from(["symbol", "scenario", "preset", "strategy", "param", "at",
                              "download"]))
def test_fuzz_text_options(cli, tmp_path, monkeypatch, text, which):
    """Free text in any option: exit 0 or 2, never a crash of the error printer (rich
    markup), nothing written outside tmp_path."""
    monkeypatch.chdir(tmp_path)
    if which == "symbol":
        r = cli(*("calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry",
                  "100", "--qty", "1", "--leverage", "5", "--symbol", text))
    elif which == "download":
        r = cli("data", "download", "--symbol", text, "--kind", "klines", "--interval", "1m",
                "--from", "2025-10-08", "--to", "2025-10-08", "--out", tmp_path / "dl",
                "--base-url", "http://127.0.0.1:9")
        assert r.code == 2
    elif which == "at":
        r = cli("backtest", "--scenario", "synthetic:1:long:1", "--from", text or "x",
                "--to", "2026-01-01T00:05Z", "--risk", "off")
    else:
        opt = {"scenario": "--scenario", "preset": "--preset", "strategy": "--strategy",
               "param": "--param"}[which]
        r = cli("backtest", "--scenario", "synthetic:1:long:1", "--risk", "off", opt, text)
    _clean(r, tmp_path)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
