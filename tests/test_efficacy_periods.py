"""`make efficacy` finds its crash periods, funding and vendor spans by file name, so the same
script scores other crash days laid out like ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import efficacy as ef
from benchmarks.efficacy import VENDOR_FILES, brackets_of, calm_days, onset, periods, stressed
from bot.data.bars import Bars
from bot.mechanics.brackets import shipped


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


def test_vision_daily_files_make_one_period_per_run_of_days(tmp_path):
    """Held-out crash days may come as Binance Vision daily files: consecutive days of a
    symbol are one period, a missing day starts another; a symbol without a funding file of
    its own takes its rows of the multi-symbol file."""
    kl, fu = tmp_path / "klines_1m", tmp_path / "funding"
    days = [_touch(kl / f"SOLUSDT-1m-2024-08-{d:02d}.zip") for d in (4, 5, 6, 8)]
    eth = _touch(kl / "ETHUSDT-1m-2024-08-05.csv.gz")
    _touch(kl / "SOLUSDT-1m-2024-08.zip")                 # a monthly file: not a period
    sol_funding = tmp_path / "sol_funding.csv"
    got = periods(kl, fu, tmp_path / "none",
                  lambda s: [sol_funding] if s == "SOLUSDT" else [])
    assert [(g[0], g[1]) for g in got] == [
        ("SOLUSDT 2024-08-04..06", days[:3] + [sol_funding]),
        ("ETHUSDT 2024-08-05..05", [eth]),
        ("SOLUSDT 2024-08-08..08", [days[3], sol_funding])]


def _days(closes: np.ndarray) -> Bars:
    """Whole UTC days of 1m bars, each bar opening at the previous close."""
    n = len(closes)
    opens = np.concatenate([[closes[0]], closes[:-1]])
    return Bars("T", 60_000, {"ts": np.arange(n, dtype=np.int64) * 60_000, "open": opens,
                              "high": np.maximum(opens, closes),
                              "low": np.minimum(opens, closes), "close": closes,
                              "volume": np.ones(n)})


def test_calm_days_by_clock_hour_and_by_rolling_hour():
    c = np.full(3 * 1440, 100.0)
    # day 1: +1.5% over 00:30..00:59 then +1.5% over 01:00..01:29: no clock hour moves more
    # than 2% (1.5% each), the 60 minutes 00:30..01:29 move 3.0%
    c[1440 + 30:1440 + 60] = 100.0 * np.linspace(1.0005, 1.015, 30)
    c[1440 + 60:] = 101.5 * 1.015 * np.ones(2 * 1440 - 60)
    c[1440 + 60:1440 + 90] = 101.5 * np.linspace(1.0005, 1.015, 30)
    # day 2: one clock hour moves 2.5%
    c[2 * 1440 + 600:] *= 1.025
    bars = _days(c)
    assert calm_days(bars) == [(0, 1440), (1440, 2880)]
    assert calm_days(bars, rolling=True) == [(0, 1440)]


def test_calm_tally_counts_give_up_and_risk_off_costs():
    from bot.risk.policy import off_policy
    from strategies import find

    hold = find("hold").from_strings({"side": "long", "leverage": "3"})
    t = ef._CalmTally({"risk off": off_policy(), "full policy": off_policy()}, [hold])
    t.n_days = 2
    # day 1: risk off +10% (1 trade, costs 0.5%), risk on +6% after one episode (cascade)
    t.add("hold", {"risk off": (0.10, 0, 0, 1, 0.005),
                   "full policy": (0.06, 1, 4, 2, 0.007)}, 0.15)
    # day 2: risk off -20% (closed past the 15% limit), risk on -15%
    t.add("hold", {"risk off": (-0.20, 0, 0, 1, 0.005),
                   "full policy": (-0.15, 1, 0, 2, 0.007)}, 0.15)
    rows = t.table([hold], 0.15)
    full = next(r for r in rows if r.startswith("| full policy"))
    # 2 episodes over 2 days; on the one day risk off lost less than 15%: 1; give-up 4/10;
    # every day: -10% -> -9%
    assert "| 1.00 | 1.00 (1 days) | +10.0% -> +6.0% | 40.0% | -10.0% -> -9.0% |" in full
    assert rows[-1] == ("- hold: 1.0 trades, fees + slippage 0.5% of the wallet, mean return "
                        "-5.0%; the day closed 15% or more down on 1 of 2 days")


def test_full_policy_against_the_stop_at_several_ends():
    """Equity in quote on a 100 wallet: the full policy behind the stop after the onset
    (bar 2), ahead from 6h on, behind again at the end: the end decides the sign."""
    n = 2 + 1500
    stop = np.full(n, 80.0)
    full = np.full(n, 80.0)
    full[2:100] = 79.0                    # 1 point behind
    full[100:1400] = 82.5                 # ahead (+6h at bar 362, +12h at 722, +24h at 1442)
    full[1400:] = 79.5                    # behind at the end
    row = ef.horizon_row("X", 2, full, stop, 100.0)
    assert row == "| X | +2.5 / +2.5 / -0.5 / -0.5 | 1300 of 1500 (87%) | -1.0 / +2.5 |"
    assert ef.horizon_row("Y", 2, full[:500], stop[:500], 100.0) == \
        "| Y | +2.5 / - / - / +2.5 | 400 of 498 (80%) | -1.0 / +2.5 |"


def test_entry_sweep_starts_and_counts():
    # entries every 240 bars from 0, the last at least 240 bars before the drop's first bar
    assert ef.entry_starts(1000) == [0, 240, 480, 720]
    assert ef.entry_starts(960) == [0, 240, 480, 720]
    assert ef.entry_starts(959) == [0, 240, 480]
    assert ef.entry_starts(100) == []

    def m(dd: float, ret: float, liq: int = 0) -> dict:
        return {"max_drawdown": dd, "total_return": ret, "liquidations": liq}

    runs = {"risk off": [m(1.0, -1.0, 1), m(0.6, -0.5)],
            "halts only": [m(0.4, 0.1), m(0.3, -0.2)],
            "liquidation rules only": [m(0.35, -0.2), m(0.31, -0.3)],
            "plain stop": [m(0.3, -0.3), m(0.3, -0.3)],
            "full policy": [m(0.3, 0.0), m(0.35, -0.1)]}
    # entry 2: the rules alone 31% > half of risk off's 60%; full's drawdown above halts'
    # and above the plain stop's (entry 1 ties it); full returns more than the stop on both
    assert ef.entry_row("P", runs) == ("| P | 2 | 1 of 2 | 0; 33.0% / 35.0%; 1 of 2 | "
                                       "0; 32.5% / 35.0% | 1 of 2 | 1 of 2 | 1 of 2 | 2 of 2 |")
    # a drop within 4 hours of the first bar leaves no entry: said so, not "0 of 0"
    empty = {k: [] for k in runs}
    assert ef.entry_row("Q", empty) == ("| Q | 0 (the drop begins within 4h of the first bar) "
                                        "| - | - | - | - | - | - | - |")
    assert ef.ENTRY_HEAD.count("|---") == ef.entry_row("P", runs).count(" | ") + 1


def test_plain_stop_exits_at_the_drawdown_and_stays_out():
    pols = ef.policies()
    stop, halts = pols["plain stop"], pols["halts only"]
    assert stop.max_drawdown == halts.max_drawdown == 0.30
    assert stop.daily_loss == 1.0 and stop.drawdown_cooldown_hours == ef.NEVER_H
    assert not stop.cascade_mode and not stop.hedge and stop.min_liq_atr == 0.0
    assert list(pols) == ["risk off", "halts only", "plain stop", "liquidation rules only",
                          "full policy"]


def test_onset_of_a_drop_in_the_first_hours_reads_no_future_bar():
    # the largest hour is bars 0..60: no history, ONSET is its first bar (before: sigma of
    # an empty slice was NaN and lc[t - 60] wrapped to the file's last bars)
    c = np.full(1440, 100.0)
    c[1:61] = 100.0 * np.exp(-0.002 * np.arange(1, 61))
    c[61:] = c[60]
    assert onset(_days(c)) == (0, 0)
    # 30 bars of history: still under an hour, the window's first bar
    c2 = np.r_[np.full(30, 100.0), c[:-30]]
    assert onset(_days(c2)) == (30, 30)


def test_a_missing_minute_is_filled_and_named(tmp_path, capsys):
    t0 = 1_760_054_400_000
    rows = ["open_time,open,high,low,close,volume,close_time,quote_volume,count,"
            "taker_buy_volume,taker_buy_quote_volume,ignore"]
    for k in range(10):
        if k == 4:
            continue
        t = t0 + k * 60_000
        rows.append(f"{t},100,101,99,100,1,{t + 59_999},100,1,0.5,50,0")
    f = tmp_path / "BTCUSDT-1m-2025-10-10_to_2025-10-10.csv"
    f.write_text("\n".join(rows) + "\n")
    bars = ef.load_bars([f])
    assert len(bars) == 10 and bars["filled"].tolist() == [k == 4 for k in range(10)]
    assert bars["close"][4] == 100.0 and bars["volume"][4] == 0.0
    assert "BTCUSDT-1m-2025-10-10_to_2025-10-10.csv: 1 missing bar(s) in 1 gap(s) filled flat " \
           "at the previous close (first from 2025-10-10T00:04:00Z)" in capsys.readouterr().err


def test_each_period_runs_on_its_own_bracket_table(monkeypatch):
    monkeypatch.setattr(ef, "USED", {})
    eth = brackets_of("ETHUSDT")
    assert eth.symbol == "ETHUSDT" and np.array_equal(eth.mmr, shipped("binance", "ETHUSDT").mmr)
    assert brackets_of("BTCUSDT").symbol == "BTCUSDT"
    assert brackets_of("AVAXUSDT").symbol == "BTCUSDT"      # no alt tiers shipped
    # the printed note says which table each symbol ran on
    assert ef.brackets_note() == (
        "- leverage brackets: BTCUSDT shipped table (Binance's tiers of 2021; today's differ: "
        "--tiers); ETHUSDT shipped table (Binance's tiers of 2021; today's differ: --tiers); "
        "AVAXUSDT on BTCUSDT's as a stand-in (no table of their own in the repository or "
        "../shared; `--tiers FILE` scores them on theirs)")


def test_efficacy_takes_tiers_holding_every_symbol(tmp_path, monkeypatch) -> None:
    import json
    import sys

    rows = [{"minNotional": 0, "maxNotional": 5_000, "maintenanceMarginRate": 0.01,
             "maxLeverage": 50, "symbol": "AVAX/USDT:USDT"}]
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"AVAX/USDT:USDT": rows}))
    monkeypatch.setattr(ef, "TIERS", [f])
    monkeypatch.setattr(ef, "USED", {})
    assert brackets_of("AVAXUSDT").mmr.tolist() == [0.01]
    assert ef.brackets_note() == f"- leverage brackets: AVAX/USDT:USDT from --tiers {f} " \
                                 "(ccxt leverage tiers)"
    # no such file: exit 2 before any work
    monkeypatch.setattr(sys, "argv", ["efficacy", str(tmp_path), "--tiers", str(tmp_path / "x")])
    with pytest.raises(SystemExit) as e:
        ef.main()
    assert e.value.code == 2


def test_stress_deepens_the_crash_window_only():
    rng = np.random.default_rng(3)
    r = rng.normal(0.0, 1e-3, 4 * 1440)
    r[3000:3060] -= 0.002                                 # the largest hour: -12%
    bars = _days(100.0 * np.exp(np.cumsum(r)))
    start, on = onset(bars)
    a, z = start - 60, on + ef.STRESS_AFTER
    same = stressed(bars, 1.0)
    for k in ("open", "high", "low", "close"):
        assert np.allclose(same[k], bars[k], rtol=1e-12)
    deep = stressed(bars, 2.0)
    lc, ld = np.log(bars["close"]), np.log(deep["close"])
    assert np.allclose(ld[:a], lc[:a])                                # before: as it was
    assert ld[z - 1] - ld[a - 1] == pytest.approx(2.0 * (lc[z - 1] - lc[a - 1]))
    extra = (ld[z - 1] - ld[a - 1]) - (lc[z - 1] - lc[a - 1])
    assert np.allclose(ld[z:] - lc[z:], extra)                        # after: shifted
    assert np.all(deep["high"] >= np.maximum(deep["open"], deep["close"]))
    assert np.all(deep["low"] <= np.minimum(deep["open"], deep["close"]))
    assert np.array_equal(deep["volume"], bars["volume"])


def test_stress_over_the_period_deepens_the_run_up_too():
    rng = np.random.default_rng(4)
    r = rng.normal(0.0, 1e-3, 4 * 1440) - 2e-5            # a grind, then the largest hour
    r[3000:3060] -= 0.002
    bars = _days(100.0 * np.exp(np.cumsum(r)))
    start, on = onset(bars)
    z = on + ef.STRESS_AFTER
    deep = stressed(bars, 1.5, "period")
    lc, ld = np.log(bars["close"]), np.log(deep["close"])
    assert ld[0] == lc[0]                                             # same start
    assert ld[z - 1] - ld[0] == pytest.approx(1.5 * (lc[z - 1] - lc[0]))
    assert np.allclose(ld[z:] - lc[z:], ld[z - 1] - lc[z - 1])        # after: shifted
    crash_only = stressed(bars, 1.5)
    assert np.allclose(np.log(crash_only["close"][:start - 60]), lc[:start - 60])


def test_alt_funding_is_taken_from_the_multi_symbol_file(tmp_path):
    import gzip

    from benchmarks.efficacy import ALT_FILE, AltFunding, alt_months
    d = tmp_path / "funding"
    d.mkdir()
    with gzip.open(d / "funding_all_3symbols.csv.gz", "wt") as f:
        f.write("symbol,calc_time,funding_interval_hours,last_funding_rate\n"
                "AVAXUSDT,1770076800000,8,0.00010000\n"
                "AVAXUSDTX,1770076800000,8,0.5\n"
                "DOTUSDT,1770076800000,8,-0.00002\n"
                "AVAXUSDT,1770105600004,8,-0.00001017\n")
    out = tmp_path / "tmp"
    out.mkdir()
    fund = AltFunding(d, out)
    [p] = fund.files("AVAXUSDT")
    assert p.read_text().splitlines() == ["calc_time,funding_interval_hours,last_funding_rate",
                                          "1770076800000,8,0.00010000",
                                          "1770105600004,8,-0.00001017"]
    assert fund.files("AVAXUSDT") == [p]                  # written once
    assert fund.files("LINKUSDT") == []
    assert AltFunding(tmp_path / "none", out).files("AVAXUSDT") == []
    names = [tmp_path / n for n in ("AVAXUSDT-1m-2026-02.csv.gz", "AVAXUSDT-1m-2026-03.csv.gz",
                                    "notes.csv.gz", "DOTUSDT-1m-2026-02.csv.gz")]
    assert alt_months(names) == {"AVAXUSDT": {"2026-02": names[0], "2026-03": names[1]},
                                 "DOTUSDT": {"2026-02": names[3]}}
    assert ALT_FILE.match("AVAXUSDT-1m-2026-02.csv.gz").group(1, 2) == ("AVAXUSDT", "2026-02")
    assert ALT_FILE.match("BTCUSDT-1m-2026-02-03_to_2026-02-07.csv") is None


def test_positioning_percentiles_before_2025_10_10_on_the_real_span():
    """The "why" of the crowding-lead note: where the vendor positioning stood when the
    largest 1h drop of 2025-10-10 began, within the vendor span's own history before it.
    The OI change spans 24 h of 4h buckets (6); at 24 buckets (96 h) it read 32."""
    from backtests.runner import RunSettings, prepare
    from bot.data.importer import build_dataset
    from tests.conftest import shared_file

    span = shared_file("coinglass_4h", "4h_2025-05-18_to_2025-11-14")
    files = [shared_file("binance_um", "klines_1m", "BTCUSDT-1m-2025-10-08_to_2025-10-12.csv"),
             shared_file("binance_um", "funding", "BTCUSDT_funding_2020-2026.csv"),
             *(span / f for f in VENDOR_FILES)]
    bars = build_dataset(files).bars
    s = RunSettings()
    line, = ef.span_percentiles(span, bars, prepare(bars, brackets_of("BTCUSDT"), s))
    assert ("among the 895 4h buckets of 4h_2025-05-18_to_2025-11-14 before it (percentile): "
            "long/short accounts 56, top traders 33, OI-weighted funding 55, OI 24h change 25; "
            "none beyond the 10th-90th") in line
