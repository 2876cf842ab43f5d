"""Lean CLI start-up: `liqbot --help` stays under a memory limit, loads no heavy library,
and the lazily loaded commands are exactly the ones their modules register."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer

from bot import cli

LIMIT_KB = 120 * 1024
PROBE = """
import json, resource, subprocess, sys
p = subprocess.run([sys.executable, "-X", "importtime", "-m", "bot.cli", "--help"],
                   capture_output=True, text=True)
mods = [ln.rsplit("|", 1)[-1].strip() for ln in p.stderr.splitlines() if "|" in ln]
print(json.dumps({"rc": p.returncode, "out": p.stdout, "mods": mods,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def test_help_peak_rss_under_120_mb_without_heavy_imports() -> None:
    # a fresh parent, so RUSAGE_CHILDREN holds only the `--help` child's peak
    r = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                  check=True).stdout)
    assert r["rc"] == 0 and "sweep" in r["out"] and "backtest" in r["out"]
    assert 0 < r["maxrss_kb"] <= LIMIT_KB, f"peak RSS {r['maxrss_kb'] / 1024:.0f} MB"
    heavy = {"numba", "pyarrow", "sqlalchemy", "sqlmodel", "ccxt", "aiohttp", "pandas", "ray",
             "optuna", "matplotlib"}
    assert not heavy & {m.split(".")[0] for m in r["mods"]}


def test_lazy_entries_match_the_registered_commands() -> None:
    eager = typer.Typer(add_completion=False)
    from bot.cli import backtest, calc, config_cmd, data, drill, emulator, heatmap, run, sweep

    for name, mod in (("data", data), ("config", config_cmd), ("calc", calc),
                      ("emulator", emulator)):
        eager.add_typer(mod.app, name=name)
    for mod in (heatmap, backtest, run, sweep, drill):
        mod.register(eager)
    group = typer.main.get_group(eager)
    assert set(group.commands) == set(cli.LAZY)
    for name, (_, _, short, hidden) in cli.LAZY.items():
        real = group.commands[name]
        text = real.short_help or (real.help or "").split("\n\n")[0].replace("\n", " ")
        assert (short, hidden) == ((text if not hidden else ""), real.hidden), name
        loaded = cli.load_command(name)
        assert [p.name for p in loaded.params] == [p.name for p in real.params]


def test_lazy_command_runs_and_unknown_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ex:       # typer's standalone mode exits itself
        cli.main(["calc", "liquidation", "--help"])
    assert ex.value.code == 0 and "Liquidation price" in capsys.readouterr().out
    with pytest.raises(SystemExit) as ex:
        cli.main(["sweeep"])
    assert ex.value.code == 2 and "Did you mean 'sweep'?" in capsys.readouterr().err


def test_help_paragraphs_wrap_to_the_terminal_not_the_source(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # typer joins the first paragraph's line breaks only; the second paragraph of
    # `heatmap`'s docstring broke after "whose true" whatever the terminal's width
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as ex:
        cli.main(["heatmap", "--help"])
    assert ex.value.code == 0
    assert "whose true position book is known" in capsys.readouterr().out
    kept = typer.core.TyperCommand("x", help="One.\n\n\bkeep\nthese lines\n\njoin\nthese")
    cli._reflow_help(kept)
    assert kept.help == "One.\n\n\bkeep\nthese lines\n\njoin these"
