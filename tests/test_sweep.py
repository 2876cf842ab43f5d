"""`liqbot sweep` and backtests/sweep.py: grid checks, determinism across backends, resume,
walk-forward against direct runner calls, seeded Optuna trials."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from backtests import engine as eg
from backtests import sweep as sw
from backtests.metrics import MINUTES_PER_YEAR, ratios
from backtests.runner import RunSettings, prepare, run
from backtests.scenarios import load_scenario
from bot.errors import LiqbotError
from bot.mechanics import brackets as br
from bot.risk.policy import load_policy
from strategies.sma_cross import SmaCross

DS = "synthetic:11:none:1"          # 1440 one-minute bars
GRID = ["fast=5,10", "slow=20,40"]


def spec(**kw: object) -> sw.SweepSpec:
    """As `liqbot sweep` builds it with the default config (live.leverage 20x)."""
    base: dict = {"datasets": [DS], "strategy": "sma_cross", "grid": GRID, "leverage": 20.0}
    base.update(kw)
    return sw.SweepSpec(**base)  # type: ignore[arg-type]


def table(out: Path) -> list[dict]:
    return pq.read_table(out / sw.RESULTS).to_pylist()


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, sw.SweepResult]:
    """The 2x2 grid, one in-process worker: the reference every backend must reproduce."""
    out = tmp_path_factory.mktemp("full")
    backend = sw.LocalBackend(1)
    try:
        return out, sw.sweep(spec(), out, backend)
    finally:
        backend.close()


def direct(bars_end: int, start: int, params: dict, wallet: float = 100_000.0) -> dict:
    """The metrics of one runner.run, Sharpe/Sortino over the live bars (as the sweep)."""
    bars = load_scenario(DS).bars.take(slice(0, bars_end))
    brackets = br.shipped("binance", "BTCUSDT")
    settings = RunSettings(wallet=wallet)
    res = run(prepare(bars, brackets, settings), SmaCross(**params), load_policy("balanced"),
              brackets, settings, "x", start=start)
    m = dict(res.metrics)
    eq = np.r_[wallet, res.records[start:, eg.R_EQUITY]]
    m["sharpe"], m["sortino"] = ratios(eq, MINUTES_PER_YEAR)
    m["equity"] = res.records[start:, eg.R_EQUITY]
    return m


# ------------------------------------------------------------------ grid and CLI errors

@pytest.mark.parametrize(("args", "needle"), [
    (["--grid", "fast"], "--grid: expected KEY=V1,V2"),
    (["--grid", "speed=1,2"], "--grid speed: sma_cross has no parameter 'speed'"),
    (["--grid", "fast=0,5"], "--grid fast: expected fast >= 1, got 0"),
    (["--grid", "leverage=1,200"], "--grid leverage: expected 0 < leverage <= 125, got 200.0"),
    (["--grid", "fast=5,x"], "--grid fast: expected int, got 'x'"),
    (["--grid", "fast=5,5"], "--grid fast: value '5' listed twice"),
    (["--grid", "fast=40,50", "--grid", "slow=20,30"], "every combination is refused"),
    (["--grid", "fast=5", "--objective", "pnl"], "--objective: expected one of sharpe"),
    (["--grid", "fast=5", "--walk-forward", "2d"], "--walk-forward: expected TRAIN:TEST"),
    (["--grid", "fast=5", "--walk-forward", "1d:1d"], "fewer than one window"),
    (["--grid", "fast=5", "--workers", "0"], "--workers: expected 1..1024"),
])
def test_bad_usage_exits_2_naming_the_option(args: list[str], needle: str, tmp_path: Path,
                                            cli) -> None:
    r = cli("sweep", DS, "--strategy", "sma_cross", *args, "--out", tmp_path / "o")
    assert r.code == 2, r.err
    assert needle in " ".join(r.err.split()), r.err
    # nothing left behind: a refused sweep wrote sweep.json (the every-combination case)
    assert not (tmp_path / "o" / "sweep.json").exists()


def test_ranked_table_shows_mean_trades_readably() -> None:
    from bot.cli.sweep import TABLE, _fmt
    fmt = dict((k, f) for _, k, f in TABLE)["n_trades"]
    assert [_fmt(fmt, v) for v in (75.0 + 2 / 3, 27.0, 12345.0)] == ["75.7", "27", "12,345"]


def test_missing_dataset_exits_2(tmp_path: Path, cli) -> None:
    r = cli("sweep", tmp_path / "nope", "--strategy", "sma_cross", "--grid", "fast=5",
            "--out", tmp_path / "o")
    err = " ".join(r.err.split())
    assert r.code == 2
    assert f"DATASET: '{tmp_path / 'nope'}' is" in err and "neither a dataset directory" in err


def test_grid_expansion_and_invalid_combinations_counted() -> None:
    grid = sw.parse_grid(["fast=10:30:10", "slow=20,40", "leverage=0.5"], SmaCross)
    assert grid == {"fast": [10, 20, 30], "slow": [20, 40], "leverage": [0.5]}
    combos, skipped, why = sw.expand(grid, SmaCross)
    assert [(c["fast"], c["slow"]) for c in combos] == [(10, 20), (10, 40), (20, 40), (30, 40)]
    assert skipped == 2 and "fast < slow (20)" in why
    assert sw.windows(10, 4, 3) == [sw.Window(0, (0, 4), (4, 7)), sw.Window(1, (3, 7), (7, 10))]
    assert sw.parse_span("2d", 60_000) == 2880 and sw.parse_span("90", 60_000) == 90


# ------------------------------------------------------------------ determinism

def test_full_grid_matches_direct_runs_and_is_ranked(full: tuple[Path, sw.SweepResult]) -> None:
    out, res = full
    rows = table(out)
    assert [(r["p_fast"], r["p_slow"]) for r in rows] == [(5, 20), (5, 40), (10, 20), (10, 40)]
    assert {r["segment"] for r in rows} == {"full"} and res.ran == 4 and res.reused == 0
    for r in rows:
        d = direct(1440, 0, {"fast": r["p_fast"], "slow": r["p_slow"]})
        for k in ("final_equity", "total_return", "max_drawdown", "sharpe", "n_trades", "fees"):
            assert r[k] == d[k], k
    best = max(rows, key=lambda r: r["sharpe"])
    assert [r["chosen"] for r in rows] == [r is best for r in rows]
    assert len({r["key"] for r in rows}) == 4


def test_two_workers_give_identical_results(full: tuple[Path, sw.SweepResult],
                                            tmp_path: Path) -> None:
    backend = sw.LocalBackend(2)
    try:
        res = sw.sweep(spec(), tmp_path, backend)
    finally:
        backend.close()
    assert res.ran == 4
    assert pq.read_table(tmp_path / sw.RESULTS).equals(pq.read_table(full[0] / sw.RESULTS))


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="ray not installed (pip install 'liqbot[ray]')")
def test_local_ray_cluster_gives_identical_results(full: tuple[Path, sw.SweepResult],
                                                   tmp_path: Path, cli) -> None:
    """`--ray local`: a private cluster on 127.0.0.1, shut down when the sweep ends."""
    import ray

    r = cli("sweep", DS, "--strategy", "sma_cross", "--grid", GRID[0], "--grid", GRID[1],
            "--ray", "local", "--out", tmp_path)
    text = r.out
    assert r.code == 0, r.err
    assert "4 backtests run" in text and "on Ray (local)" in " ".join(text.split())
    assert not ray.is_initialized()
    assert pq.read_table(tmp_path / sw.RESULTS).equals(pq.read_table(full[0] / sw.RESULTS))


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed")
def test_unreachable_ray_address_fails_fast(tmp_path: Path, cli) -> None:
    r = cli("sweep", DS, "--strategy", "sma_cross", "--grid", "fast=5", "--ray", "127.0.0.1:1",
            "--out", tmp_path)
    assert r.code == 2 and "--ray 127.0.0.1:1: no Ray cluster answers there" in " ".join(r.err.split())


# ------------------------------------------------------------------ resume

def test_resume_runs_only_the_missing_half(full: tuple[Path, sw.SweepResult],
                                           tmp_path: Path) -> None:
    one = sw.LocalBackend(1)
    half = sw.sweep(spec(grid=["fast=5", "slow=20,40"]), tmp_path, one)
    assert (half.ran, half.reused, len(half.rows)) == (2, 0, 2)
    with (tmp_path / sw.JOURNAL).open("a") as f:
        f.write('{"key": "cut short by a kil')          # a sweep killed mid-write
    again = sw.sweep(spec(), tmp_path, one)
    assert (again.ran, again.reused) == (2, 2)
    ran_now = {(r["p_fast"], r["p_slow"]) for r in again.rows if r["p_fast"] == 10}
    assert ran_now == {(10, 20), (10, 40)}
    assert pq.read_table(tmp_path / sw.RESULTS).equals(pq.read_table(full[0] / sw.RESULTS))
    assert sw.sweep(spec(), tmp_path, one).ran == 0
    lines = (tmp_path / sw.JOURNAL).read_text().splitlines()
    assert len([ln for ln in lines if ln.endswith("}")]) == 4


def test_a_changed_non_price_column_or_another_path_is_not_reused(tmp_path: Path) -> None:
    """Rows were keyed by ts and OHLC only, without the dataset's name: a re-import that
    added funding reused the old figures, and a second path with the same prices crashed
    (KeyError) or took the first one's rows."""
    import dataclasses

    from bot.data import dataset as ds_io

    ds = load_scenario(DS)
    a, b = tmp_path / "a", tmp_path / "b"
    ds_io.save(ds, a)
    ds_io.save(ds, b)
    one = sw.LocalBackend(1)
    try:
        out = tmp_path / "out"
        first = sw.sweep(spec(datasets=[str(a)], grid=["fast=5", "slow=20"]), out, one)
        assert (first.ran, first.reused) == (1, 0)
        # funding changed, prices not: a new key, a new run, another result
        bars = ds.bars
        funded = bars.with_columns(funding_rate=np.where(np.arange(len(bars)) % 48 == 0,
                                                         0.003, np.nan))
        ds_io.save(dataclasses.replace(ds, bars=funded), a)
        again = sw.sweep(spec(datasets=[str(a)], grid=["fast=5", "slow=20"]), out, one)
        assert (again.ran, again.reused) == (1, 0)
        assert again.rows[0]["funding"] != first.rows[0]["funding"]
        # two paths holding the same data: one row set each, named by its own path
        both = sw.sweep(spec(datasets=[str(a), str(b)], grid=["fast=5", "slow=20"]),
                        tmp_path / "out2", one)
        assert both.ran == 2 and [r["dataset"] for r in both.rows] == [str(a), str(b)]
    finally:
        one.close()
    assert sw.fingerprint(bars) != sw.fingerprint(funded)


def test_rerun_with_other_settings_is_refused(full: tuple[Path, sw.SweepResult], cli) -> None:
    r = cli("sweep", DS, "--strategy", "sma_cross", "--grid", "fast=5", "--wallet", "5000",
            "--out", full[0])
    err = " ".join(r.err.split())
    assert r.code == 2 and "--out:" in err and "other settings (wallet)" in err


# ------------------------------------------------------------------ walk-forward

def test_walk_forward_against_direct_runs(tmp_path: Path, cli) -> None:
    r = cli("sweep", DS, "--strategy", "sma_cross", "--grid", GRID[0], "--grid", GRID[1],
            "--walk-forward", "360:240", "--workers", "1", "--out", tmp_path)
    text = " ".join(r.out.split())
    assert r.code == 0, r.err
    rows = table(tmp_path)
    # windows: train [s, s+360), test [s+360, s+600), s = 0, 240, 480, 720
    assert sorted({r["window"] for r in rows}) == [0, 1, 2, 3]
    train = [r for r in rows if r["segment"] == "train" and r["window"] == 1]
    test = [r for r in rows if r["segment"] == "test" and r["window"] == 1]
    assert len(train) == 4 and len(test) == 1 and all(r["bars"] == 360 for r in train)
    is_sharpe = {}
    for r in train:
        p = {"fast": r["p_fast"], "slow": r["p_slow"]}
        d = direct(600, 240, p)
        assert (r["sharpe"], r["total_return"], r["n_trades"]) == (d["sharpe"], d["total_return"],
                                                                   d["n_trades"])
        is_sharpe[(p["fast"], p["slow"])] = d["sharpe"]
    best = max(is_sharpe, key=lambda k: is_sharpe[k])
    assert [(r["p_fast"], r["p_slow"]) for r in train if r["chosen"]] == [best]
    t = test[0]
    assert (t["p_fast"], t["p_slow"]) == best and t["bars"] == 240
    d = direct(840, 600, {"fast": best[0], "slow": best[1]})
    assert (t["sharpe"], t["total_return"], t["max_drawdown"]) == (d["sharpe"], d["total_return"],
                                                                   d["max_drawdown"])
    assert t["equity"] == list(d["equity"])
    # concatenated out of sample: window returns compounded
    tests = [r for r in rows if r["segment"] == "test"]
    want = math.prod(1 + r["total_return"] for r in tests) - 1
    rec = json.loads((tmp_path / sw.MANIFEST).read_text())["setup"]
    assert rec["strategy"] == "sma_cross"
    assert f"{want:+.2%}" in text and "concatenated out-of-sample" in text
    assert "IS sharpe" in text and "OOS sharpe" in text
    # the shortest window (test: 240 one-minute bars = 4 h) flags the annualised ratios
    assert "Sharpe and Sortino are annualised from 0.167 day(s) of bars in the shortest " \
           "window: indicative only on fewer than 30 days" in text


def test_window_days_counts_the_last_bar_and_30_days_are_not_flagged() -> None:
    from backtests.metrics import short_span_note
    from bot.cli.sweep import window_days

    row = {"start": "2025-10-01T00:00:00Z", "end": "2025-10-30T23:59:00Z", "bars": 43_200}
    assert window_days(row) == pytest.approx(30.0)
    assert short_span_note(30.0) is None
    assert short_span_note(29.9) is not None


# ------------------------------------------------------------------ Optuna

@pytest.mark.skipif(importlib.util.find_spec("optuna") is None,
                    reason="optuna not installed (pip install 'liqbot[optuna]')")
def test_optuna_trials_are_seeded_and_deterministic(tmp_path: Path) -> None:
    grid = ["fast=2,30", "slow=10,80"]
    a = sw.sweep(spec(grid=grid, trials=6, seed=3), tmp_path / "a", sw.LocalBackend(1))
    assert a.ran == 6 - a.skipped
    pool = sw.LocalBackend(2)
    try:
        b = sw.sweep(spec(grid=grid, trials=6, seed=3), tmp_path / "b", pool)
        assert b.ran == a.ran
    finally:
        pool.close()
    assert pq.read_table(tmp_path / "a" / sw.RESULTS).equals(pq.read_table(tmp_path / "b" / sw.RESULTS))
    pts = [(r["p_fast"], r["p_slow"]) for r in a.rows]
    assert len(pts) + a.skipped == 6 and len(set(pts)) == len(pts) >= 4   # refused: fast >= slow
    assert all(2 <= f <= 30 and 10 <= s <= 80 and f < s for f, s in pts)
    best = max(a.rows, key=lambda r: r["sharpe"])
    assert [r["chosen"] for r in a.rows] == [r is best for r in a.rows]
    c = sw.sweep(spec(grid=grid, trials=6, seed=4), tmp_path / "c", sw.LocalBackend(1))
    assert [(r["p_fast"], r["p_slow"]) for r in c.rows] != pts


def test_a_dataset_without_a_bracket_table_is_announced(tmp_path: Path, cli) -> None:
    from bot.data import dataset as ds_io
    from bot.data.synthetic import SynthSpec, generate, spec_with

    d = tmp_path / "sol"
    ds_io.save(generate(spec_with(SynthSpec(seed=3, days=1, symbol="SOLUSDT"),
                                  start_price=150.0)), d)
    r = cli("sweep", d, "--strategy", "sma_cross", "--grid", "fast=5", "--workers", "1",
            "--out", tmp_path / "o")
    assert r.code == 0, r.err
    err = " ".join(r.err.split())
    assert err.count("SOLUSDT: no leverage-bracket table") == 1
    assert "--tiers FILE" in err


def test_a_sweep_runs_on_the_tiers_file_and_keys_its_rows_by_it(tmp_path: Path, cli) -> None:
    """--tiers: the workers trade on the file's table (a 10x hold of 100k may open 500k
    there: 5x above 250k, 4x above 1M), and a rerun into the same --out on other tiers is
    refused instead of reusing rows computed on the first."""
    from bot.data import dataset as ds_io
    from bot.data.synthetic import SynthSpec, generate, spec_with

    d = tmp_path / "sol"
    ds_io.save(generate(spec_with(SynthSpec(seed=3, days=1, symbol="SOLUSDT"),
                                  start_price=150.0)), d)
    rows = [(0, 250_000, 0.01, 10, 0), (250_000, 1_000_000, 0.05, 5, 10_000),
            (1_000_000, 5_000_000, 0.10, 4, 60_000)]
    tiers = [{"tier": i + 1, "minNotional": lo, "maxNotional": hi, "maintenanceMarginRate": m,
              "maxLeverage": lev, "info": {"cum": str(c)}}
             for i, (lo, hi, m, lev, c) in enumerate(rows)]
    f = tmp_path / "tiers.json"
    f.write_text(json.dumps({"SOL/USDT:USDT": tiers}))
    args = ["sweep", d, "--strategy", "hold", "--grid", "leverage=10", "--risk", "off",
            "--workers", "1"]
    used = {}
    for name, extra in (("stand-in", []), ("tiers", ["--tiers", f])):
        r = cli(*args, "--out", tmp_path / name, *extra)
        assert r.code == 0, r.err
        [row] = table(tmp_path / name)
        used[name] = row["max_leverage_used"]
    # the default live.leverage (20x) is above this table's 10x: the sweep trades at 10x,
    # the most the exchange would set, where only tier 1 (to 250k) is open: 250k, not 1M
    assert "live.leverage 20x is above what SOLUSDT's brackets allow (10x)" in r.err
    assert used["stand-in"] > 9.5 and 2.5 <= used["tiers"] < 3.0     # 2.5x at entry
    manifest = json.loads((tmp_path / "tiers" / sw.MANIFEST).read_text())
    assert manifest["setup"]["brackets"]["SOLUSDT"][1]["mmr"] == 0.05
    f2 = tmp_path / "tiers2.json"
    f2.write_text(json.dumps({"SOL/USDT:USDT": tiers[:2]}))
    r = cli(*args, "--out", tmp_path / "tiers", "--tiers", f2)
    assert r.code == 2 and "other settings (brackets)" in r.err
    f3 = tmp_path / "btc.json"
    f3.write_text(json.dumps({"BTC/USDT:USDT": tiers}))
    r = cli(*args, "--out", tmp_path / "o3", "--tiers", f3)
    assert r.code == 2 and "no tiers for symbol 'SOLUSDT'" in r.err and "btc.json" in r.err


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (Linux /proc), children first."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            kids = (task / "children").read_text().split() if (task / "children").exists() else []
            for k in map(int, kids):
                if k not in out:
                    out.add(k)
                    todo.append(k)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_sigterm_stops_the_workers_and_says_how_to_resume(tmp_path: Path) -> None:
    """SIGTERM mid-sweep: exit 130 naming the journal, and no worker or forkserver process
    left running (before, the pool's processes outlived the command)."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "o"
    p = subprocess.Popen([sys.executable, "-m", "bot.cli", "sweep", "synthetic:11:none:2",
                          "--strategy", "sma_cross", "--grid", "fast=2:40:1",
                          "--grid", "slow=60:200:10", "--workers", "2", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / sw.JOURNAL).exists():
            time.sleep(0.2)
        assert (out / sw.JOURNAL).exists(), "the sweep wrote no row"
        kids = _descendants(p.pid)
        assert len(kids) >= 2                     # the workers (and the forkserver)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "sweep interrupted" in err and "the same command resumes" in " ".join(err.split())
    time.sleep(1.0)
    assert not [k for k in kids if _alive(k)]


def test_ctrl_c_while_drawing_the_png_says_it_is_missing(tmp_path: Path, cli,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C after the last backtest, while matplotlib draws heatmap.png: exit 130 naming
    the PNG that was not written and the results that were; no half-written PNG."""
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    def interrupted(self, fname, *a, **k) -> None:   # Ctrl-C mid-write: a partial file
        Path(fname).write_bytes(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", interrupted)
    out = tmp_path / "o"
    r = cli("sweep", "synthetic:1:none:1", "--strategy", "sma_cross", "--grid", "fast=5,10",
            "--grid", "slow=60", "--workers", "1", "--out", out)
    assert r.code == 130, r.err
    err = " ".join(r.err.split())
    assert f"sweep interrupted while drawing {out / 'heatmap.png'}: not written" in err
    assert (out / sw.RESULTS).exists() and not (out / "heatmap.png").exists()
    assert not (out / "heatmap.png.tmp").exists()
    assert "results:" in r.out


def test_an_interrupt_before_any_row_says_nothing_was_kept(tmp_path: Path, cli,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """It said "0 finished row(s) kept in OUT/rows.jsonl", a file that did not exist."""
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sw, "sweep", interrupted)
    r = cli("sweep", "synthetic:1:none:1", "--strategy", "sma_cross", "--grid", "fast=5",
            "--workers", "1", "--out", tmp_path / "o")
    assert r.code == 130
    assert "interrupted before any row finished: nothing kept" in " ".join(r.err.split())


def test_rows_of_another_code_version_are_not_reused(tmp_path: Path, monkeypatch) -> None:
    """Keys held the settings, data and parameters, not the code: after the mechanics
    changed (funding before the open's fills) a rerun on the same OUT reported "0 backtests
    run, 2 reused" with the old figures."""
    assert len(sw.code_digest()) == 16
    one = sw.LocalBackend(1)
    try:
        out = tmp_path / "out"
        sw.sweep(spec(grid=["fast=5", "slow=20"]), out, one)
        monkeypatch.setattr(sw, "code_digest", lambda: "another-version")
        with pytest.raises(LiqbotError, match=r"holds a sweep with other settings \(code\) "
                                              r"\(liqbot's backtest code changed since"):
            sw.sweep(spec(grid=["fast=5", "slow=20"]), out, one)
    finally:
        one.close()


def test_a_worker_on_another_code_version_refuses_its_tasks() -> None:
    """The digest was computed by the driver only: a Ray node running another install
    would have written rows under the driver's digest."""
    from bot.risk.policy import off_policy

    setup = sw.Setup("sma_cross", "off", "balanced", off_policy(), RunSettings(), code="other")
    task = sw.make_task(setup.digest(), DS, "fp", 0, "full", (0, 10), {"fast": 5})
    with pytest.raises(LiqbotError, match=r"its liqbot backtest code \(\w+\) is not the "
                                          r"driver's \(other\)"):
        sw.evaluate(setup, task)
    assert sw.Setup("sma_cross", "off", "balanced", off_policy(), RunSettings()).code == \
        sw.code_digest()


def test_an_updated_shipped_bracket_table_changes_the_code_digest(tmp_path: Path) -> None:
    """A sweep without --tiers runs on bot/mechanics/brackets/*.json, which neither the
    settings nor the digest (only `*.py`) held: after the shipped table was updated a
    rerun into the same OUT reused the rows computed on the old margin tiers."""
    table_file = tmp_path / "bot/mechanics/brackets/binance_BTCUSDT.json"
    table_file.parent.mkdir(parents=True)
    (tmp_path / "bot/mechanics/kernel.py").write_text("X = 1\n")
    table_file.write_text('{"tiers": [1]}\n')
    before = sw.tree_digest(tmp_path)
    table_file.write_text('{"tiers": [2]}\n')
    after = sw.tree_digest(tmp_path)
    assert after != before
    (tmp_path / "bot/mechanics/__pycache__").mkdir()
    (tmp_path / "bot/mechanics/__pycache__/k.json").write_text("{}")   # not source: ignored
    assert sw.tree_digest(tmp_path) == after
    assert sw.code_digest() == sw.tree_digest(Path(sw.__file__).resolve().parent.parent)


_USER_STRATEGY = '''
from typing import ClassVar

import numpy as np

from strategies.base import Param, Strategy, leverage


class Tilt(Strategy):
    WINDOW = 1
    PARAMS: ClassVar[dict[str, Param]] = {"leverage": leverage(1.0, "held throughout")}

    def targets(self, bars, signals):
        return np.full(len(bars), SIDE * self.params["leverage"])
'''


def test_an_edited_user_strategy_file_reruns_its_rows(tmp_path: Path, monkeypatch) -> None:
    """A user's `module:Class` was in no key (the code digest covers liqbot's own files
    only): after editing the strategy file, a rerun into the same OUT reported "0 backtests
    run, 2 reused" with the figures of the old code."""
    import sys

    src = tmp_path / "ustrat_sweep.py"
    monkeypatch.chdir(tmp_path)                 # loaded from the current directory
    monkeypatch.setattr("sys.path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])

    def rerun(side: str) -> sw.SweepResult:
        src.write_text(f"SIDE = {side}\n" + _USER_STRATEGY)
        monkeypatch.delitem(sys.modules, "ustrat_sweep", raising=False)   # a new process
        one = sw.LocalBackend(1)
        try:
            return sw.sweep(spec(strategy="ustrat_sweep:Tilt", grid=["leverage=1,2"]),
                            tmp_path / "out", one)
        finally:
            one.close()

    def figures(res: sw.SweepResult) -> list[float]:
        return [r["total_return"] for r in res.rows]

    long_ = rerun("1.0")
    assert (long_.ran, long_.reused) == (2, 0)
    short = rerun("-1.0")                       # the file edited: its targets flipped
    assert (short.ran, short.reused) == (2, 0)
    assert all(a != b for a, b in zip(figures(long_), figures(short), strict=True))
    again = rerun("-1.0")                       # unchanged: reused
    assert (again.ran, again.reused) == (0, 2) and figures(again) == figures(short)
    back = rerun("1.0")                         # the old file again: its old rows
    assert (back.ran, back.reused) == (0, 2) and figures(back) == figures(long_)
    assert sw.strategy_digest("sma_cross") == ""      # shipped: in the code digest
    # a worker whose copy of the file differs from the driver's refuses its tasks
    setup = sw.Setup("ustrat_sweep:Tilt", "on", "balanced", load_policy("balanced"),
                     RunSettings(), strategy_code="other")
    task = sw.make_task(setup.digest(), DS, "fp", 0, "full", (0, 10), {"leverage": 1.0})
    with pytest.raises(LiqbotError, match="its file of --strategy ustrat_sweep:Tilt is not "
                                          "the driver's"):
        sw.evaluate(setup, task)


def test_a_sweep_on_4h_bars_says_what_the_rules_read(tmp_path: Path, cli) -> None:
    """`backtest` said the risk rules were measured on 1m bars when a 4h dataset ran with
    risk on; `sweep` did not (a 4h walk-forward printed its ranks without a word)."""
    from bot.data import dataset as ds_io
    from bot.data.resample import resample
    from bot.data.synthetic import SynthSpec, generate

    ds = generate(SynthSpec(seed=3, days=10))
    h4 = ds_io.Dataset(resample(ds.bars, 4 * 3_600_000))
    ds_io.save(h4, tmp_path / "h4")
    args = ("sweep", tmp_path / "h4", "--strategy", "hold", "--grid", "leverage=2,3",
            "--workers", "1")
    r = cli(*args, "--out", tmp_path / "on")
    assert r.code == 0, r.err
    assert "risk rules: measured on 1m bars (docs/risk.md); on 4h bars" in " ".join(r.out.split())
    r = cli(*args, "--risk", "off", "--out", tmp_path / "off")
    assert r.code == 0 and "risk rules:" not in r.out
