"""bot.warmup: the parallel cold-cache compile of a bar backtest.

The cold-cache tests run in subprocesses with their own NUMBA_CACHE_DIR (numba's cache
directory is fixed per process): one cold run with the warm-up, one cold run whose child
fails (everything compiled in-process: the reference results), and one warm run on the
first cache (no child, nothing compiled). No timed assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bot import warmup

ROOT = Path(__file__).resolve().parent.parent

#: a cold backtest in a fresh process: the warm-up, then the real run (as the CLI does);
#: prints one JSON line with the warm-up's result, the kernels' cache statistics and the
#: run's figures. argv: dataset, child command as JSON ("" keeps the default)
DRIVER = """
import hashlib, json, sys
from pathlib import Path
from backtests.runner import RunSettings, prepare, run
from bot import warmup
from bot.data import dataset as ds_io
from bot.mechanics.brackets import shipped
from bot.risk.policy import load_policy
from strategies import find

if sys.argv[2]:
    warmup.COMMAND = json.loads(sys.argv[2])
bars = ds_io.load(Path(sys.argv[1])).bars
br = shipped("binance", bars.symbol)
strat, pol, settings = find("trend")(), load_policy("balanced"), RunSettings()
was_cold = warmup.cold()
done = warmup.parallel_compile(bars, br, settings, strat, pol)
r = run(prepare(bars, br, settings, risk_rows=False), strat, pol, br, settings, "on")
sig_root, trade_root = warmup.roots()
print(json.dumps({
    "cold": was_cold, "parallel": done,
    "signal_misses": sum(sig_root.stats.cache_misses.values()),
    "signal_hits": sum(sig_root.stats.cache_hits.values()),
    "trading_misses": sum(trade_root.stats.cache_misses.values()),
    "metrics": r.metrics,
    "records": hashlib.sha256(r.records.tobytes()).hexdigest(),
    "trades": hashlib.sha256(r.trades.tobytes()).hexdigest(),
    "decisions": hashlib.sha256(r.decisions.tobytes()).hexdigest()}, sort_keys=True))
"""


def _files(path: Path) -> int:
    return sum(len(f) for _, _, f in os.walk(path))


def _drive(day: Path, cache: Path, command: list[str] | None = None) -> dict[str, Any]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    env.pop(warmup.ENV, None)
    out = subprocess.run([sys.executable, "-c", DRIVER, str(day),
                          json.dumps(command) if command else ""],
                         env=env, cwd=ROOT, check=True, capture_output=True, text=True,
                         timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bot.data import dataset as ds_io
    from bot.data.synthetic import SynthSpec, generate

    path = tmp_path_factory.mktemp("warmup") / "day"
    ds_io.save(ds_io.Dataset(generate(SynthSpec(seed=1, days=1)).bars), path)
    return path


@pytest.fixture(scope="module")
def cold_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("numba-cold")


@pytest.fixture(scope="module")
def parallel_run(day: Path, cold_cache: Path) -> dict[str, Any]:
    """A cold run with the warm-up (the first compile into `cold_cache`)."""
    if warmup.usable_cpus() < 2:
        pytest.skip("the warm-up needs 2 CPUs")
    return _drive(day, cold_cache)


@pytest.fixture(scope="module")
def in_process_run(day: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A cold run whose child fails at once: everything compiled in this process."""
    cache = tmp_path_factory.mktemp("numba-fail")
    return _drive(day, cache, [sys.executable, "-c", "import sys; sys.exit(3)"])


def test_cold_run_compiles_the_signal_tree_in_the_child(parallel_run: dict[str, Any]) -> None:
    assert parallel_run["cold"] and parallel_run["parallel"]
    # this process loaded the signal kernel from the child's cache entry, compiled none
    assert parallel_run["signal_misses"] == 0 and parallel_run["signal_hits"] >= 1
    # compiled here, in parallel, once: the real run reused the warm-up's compilation
    # (the same argument types)
    assert parallel_run["trading_misses"] == 1


def test_failed_child_falls_back_to_compiling_here(in_process_run: dict[str, Any]) -> None:
    assert in_process_run["cold"] and not in_process_run["parallel"]
    assert in_process_run["signal_misses"] >= 1


def test_results_identical_with_and_without_the_warm_up(
        parallel_run: dict[str, Any], in_process_run: dict[str, Any]) -> None:
    for key in ("metrics", "records", "trades", "decisions"):
        assert parallel_run[key] == in_process_run[key], key


def test_warm_cache_starts_no_child_and_compiles_nothing(
        day: Path, cold_cache: Path, parallel_run: dict[str, Any], tmp_path: Path) -> None:
    before = _files(cold_cache)
    marker = tmp_path / "child-started"
    # a child, if one were started, would leave this file
    got = _drive(day, cold_cache, [sys.executable, "-c",
                                   f"open({str(marker)!r}, 'w').close()"])
    assert not got["cold"] and not got["parallel"]
    assert not marker.exists()
    assert got["signal_misses"] == 0 and got["trading_misses"] == 0
    assert _files(cold_cache) == before                    # no cache entry written
    for key in ("metrics", "records", "trades", "decisions"):
        assert got[key] == parallel_run[key], key


# ---- in-process checks (no compilation) ----

def test_opt_out_and_single_cpu_disable_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warmup, "usable_cpus", lambda: 2)
    monkeypatch.delenv(warmup.ENV, raising=False)
    assert warmup.enabled()
    monkeypatch.setenv(warmup.ENV, "0")
    assert not warmup.enabled()
    monkeypatch.setenv(warmup.ENV, "1")
    monkeypatch.setattr(warmup, "usable_cpus", lambda: 1)
    assert not warmup.enabled()


def test_disabled_or_warm_starts_no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    from backtests.runner import RunSettings
    from bot.data.synthetic import SynthSpec, generate
    from bot.mechanics.brackets import shipped

    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("no child expected")

    monkeypatch.setattr(warmup, "start_child", boom)
    monkeypatch.setattr(warmup, "trading_job", boom)
    bars = generate(SynthSpec(seed=1, days=1)).bars.take(slice(0, 100))
    args = (bars, shipped("binance", "BTCUSDT"), RunSettings(), object())
    monkeypatch.setattr(warmup, "cold", lambda: True)
    monkeypatch.setenv(warmup.ENV, "0")
    assert warmup.parallel_compile(*args) is False
    monkeypatch.delenv(warmup.ENV)
    monkeypatch.setattr(warmup, "cold", lambda: False)
    assert warmup.parallel_compile(*args) is False


def test_finish_kills_an_overrunning_child() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            stdin=subprocess.PIPE)
    t = time.monotonic()
    assert warmup.finish(proc, timeout=0.2) is False
    assert proc.returncode is not None                     # reaped: no orphan
    assert time.monotonic() - t < 30


def test_finish_reports_a_failed_child() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(2)"])
    assert warmup.finish(proc) is False
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    assert warmup.finish(proc) is True


def test_a_failing_or_interrupted_trading_compile_reaps_the_child(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from backtests.runner import RunSettings
    from bot.data.synthetic import SynthSpec, generate
    from bot.mechanics.brackets import shipped

    started: list[subprocess.Popen[bytes]] = []
    real_start = warmup.start_child

    def start(*a: Any) -> subprocess.Popen[bytes]:
        started.append(real_start(*a))
        return started[-1]

    monkeypatch.setattr(warmup, "start_child", start)
    monkeypatch.setattr(warmup, "cold", lambda: True)
    monkeypatch.setattr(warmup, "usable_cpus", lambda: 2)
    monkeypatch.delenv(warmup.ENV, raising=False)
    bars = generate(SynthSpec(seed=1, days=1)).bars.take(slice(0, 100))
    args = (bars, shipped("binance", "BTCUSDT"), RunSettings(), object())

    def fail(*a: Any, **k: Any) -> None:
        raise RuntimeError("compile failed")

    # a failure of this process's part: logged, the (quick) child still waited for
    monkeypatch.setattr(warmup, "COMMAND", [sys.executable, "-c", "pass"])
    monkeypatch.setattr(warmup, "trading_job", fail)
    assert warmup.parallel_compile(*args) is True
    assert started[-1].returncode == 0

    def interrupt(*a: Any, **k: Any) -> None:
        raise KeyboardInterrupt

    # an interrupt: the (slow) child is killed at once and the interrupt propagates
    monkeypatch.setattr(warmup, "COMMAND", [sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(warmup, "trading_job", interrupt)
    t = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        warmup.parallel_compile(*args)
    assert started[-1].returncode is not None and time.monotonic() - t < 30


ORPHAN = """
import os, sys
from bot import warmup
from bot.data.synthetic import SynthSpec, generate
from bot.mechanics.brackets import shipped
bars = generate(SynthSpec(seed=1, days=1)).bars.take(slice(0, 100))
proc = warmup.start_child(bars, shipped("binance", "BTCUSDT"), 60)
print(proc.pid, flush=True)
os._exit(0)                                # dies without waiting for its child
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG: Linux")
def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    out = subprocess.run([sys.executable, "-c", ORPHAN], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    pid = int(out.split()[0])
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    # killed, not done: it never got to write the signal kernel's cache entry
    assert not list((tmp_path / "numba").rglob("stream.run_steps__lean-*"))


def test_the_cli_calls_it_for_a_bar_backtest(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(warmup, "parallel_compile", lambda *a: calls.append(a) or False)
    res = cli("backtest", "--scenario", "synthetic:1:none:1", "--strategy", "trend",
              "--risk", "on")
    assert res.code == 0, res.err
    assert len(calls) == 1 and len(calls[0][0]) > 10       # the run's bars
