"""Bad input is an exit-2 message naming the option, file or URL: never a traceback, a NaN or
rich markup read from user text. Unwritable output paths use /proc, where even root cannot
create files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from bot.cli.paths import check_output, check_output_dir, write_output
from bot.errors import LiqbotError
from tests.test_safety import KHEAD, T0

needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bot.data import dataset
    from bot.data.synthetic import SynthSpec, generate
    d = tmp_path_factory.mktemp("s") / "ds"
    dataset.save(generate(SynthSpec(seed=1, days=1)), d)
    return d


@needs_proc
def test_unwritable_output_refused_before_work(cli, synth_dir, tmp_path):
    """1: every output option is probed with a real write first; nothing runs, nothing is
    printed on stdout, no probe is left behind."""
    for opt, path in (("--report", "/proc/x.html"), ("--json", "/proc/x.json")):
        r = cli("backtest", "--scenario", "calm", "--risk", "on", opt, path)
        assert r.code == 2 and f"--{opt[2:]}: {path} is not writable" in r.err, r.err
        assert r.out == ""                    # refused before the backtest ran
    r = cli("heatmap", synth_dir, "--timeline", "/proc/t.csv")
    assert r.code == 2 and "--timeline: /proc/t.csv is not writable" in r.err
    r = cli("sweep", "synthetic:1:none:1", "--strategy", "trend", "--grid", "fast=20",
            "--out", "/proc/sw")
    assert r.code == 2 and "--out: /proc/sw is not writable" in r.err
    r = cli("data", "import", synth_dir / "bars.parquet", "--out", "/proc/xx")
    assert r.code == 2 and "--out: /proc/xx is not writable" in r.err
    with pytest.raises(LiqbotError, match="--json: /proc/y.json is not writable"):
        write_output(Path("/proc/y.json"), "{}", "--json")
    # a writable target passes and the probe leaves nothing behind
    assert check_output(tmp_path / "f.json", "--json") == tmp_path / "f.json"
    assert check_output_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []
    # one file for both outputs: the report overwrote the JSON (both "written")
    r = cli("backtest", "--scenario", "calm", "--json", tmp_path / "x.json", "--report",
            tmp_path / "." / "x.json")
    assert r.code == 2 and r.out == "" and "--json and --report: both name" in r.err
    assert "the report would overwrite the JSON (give two files)" in " ".join(r.err.split())


def test_store_not_a_database(cli, tmp_path):
    """2: a store URL naming a file that is not SQLite is a usage error naming the URL."""
    f = tmp_path / "somefile.csv"
    f.write_text("a,b\n1,2\n")
    url = f"sqlite:///{f}"
    r = cli("status", "--store", url)
    assert r.code == 2 and f"store {url}" in r.err and "not a database" in r.err, r.err
    r = cli("run", "--replay", "calm", "--store", url)
    assert r.code == 2 and f"store {url}" in r.err and "not a database" in r.err, r.err


def test_config_not_utf8(cli, tmp_path):
    """3: a config or preset file that is not UTF-8 names the file."""
    f = tmp_path / "bin.toml"
    f.write_bytes(b"\xff\xfe bad")
    r = cli("config", "check", f)
    assert r.code == 2 and "UTF-8" in r.out and str(f) in r.out, r.out + r.err
    for args in (("--config", f, "backtest", "--scenario", "calm"),
                 ("backtest", "--scenario", "calm", "--preset", f)):
        r = cli(*args)
        assert r.code == 2 and str(f) in r.err and "UTF-8" in r.err, r.err


def test_time_microseconds_and_offsets(cli, synth_dir):
    """4: a microsecond timestamp is refused naming --at; an offset converts silently."""
    r = cli("heatmap", synth_dir, "--at", "1760130000000000")
    assert r.code == 2 and "--at: expected a UTC time" in r.err, r.err
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # numpy's timezone UserWarning would be exit 1
        r = cli("heatmap", synth_dir, "--at", "2026-01-01T14:00+02:00", "--json")
        assert r.code == 0, r.err
        assert json.loads(r.out)["at"] == "2026-01-01T12:00:00Z"
        r = cli("backtest", synth_dir, "--risk", "off", "--from", "2026-01-01T14:00+02:00",
                "--json", "-")
        assert r.code == 0, r.err
        assert json.loads(r.out)["meta"]["from"] == "2026-01-01T12:00:00Z"


def test_heatmap_table_no_nan(cli, synth_dir):
    """5: before the hourly ATR exists the table prints '-', never 'nan'."""
    r = cli("heatmap", synth_dir, "--at", "2026-01-01T00:30Z", "--json")
    assert r.code == 0 and any(c["distance_atr"] is None for c in json.loads(r.out)["clusters"])
    r = cli("heatmap", synth_dir, "--at", "2026-01-01T00:30Z")
    assert r.code == 0, r.err
    assert "long liquidation clusters" in r.out and "nan" not in r.out.lower()


def test_user_text_printed_verbatim(cli, synth_dir, tmp_path):
    """6: paths with rich markup or :emoji: codes print as typed, in output and errors."""
    src = tmp_path / "BTCUSDT-1m-2025-10-10.csv"
    src.write_text(KHEAD + "".join(
        f"{T0 + i * 60_000},{100 + i},{101 + i},{99 + i},{100.5 + i},10,{T0 + i * 60_000 + 59_999},"
        "1000,5,4,400,0\n" for i in range(30)))
    out = tmp_path / "[red]out"
    r = cli("data", "import", src, "--out", out)
    assert r.code == 0, r.err
    assert f"wrote {out}" in r.out
    fire = tmp_path / "my:fire:data"
    fire.symlink_to(synth_dir)
    r = cli("data", "info", fire)
    assert r.code == 0 and str(fire) in r.out, r.out
    bad = tmp_path / "[bold]x:boom:"
    r = cli("data", "info", bad)
    assert r.code == 2 and str(bad) in r.err, r.err


@pytest.mark.parametrize(("args", "named"), [
    (["backtest", "{nope}", "--risk", "on"], "DATASET: "),
    (["backtest", "--scenario", "{nope}", "--risk", "on"], "--scenario: "),
    (["run", "--replay", "{nope}", "--store", "sqlite:///{tmp}/s.db"], "--replay: "),
    (["drill", "{nope}"], "DATASET: "),
])
def test_a_missing_dataset_is_named_by_the_argument_given(cli, tmp_path, args, named) -> None:
    """Each command names the argument the user typed (they all said --scenario)."""
    nope = str(tmp_path / "nope")
    r = cli(*(a.format(nope=nope, tmp=tmp_path) for a in args))
    err = " ".join(r.err.split())
    assert r.code == 2 and f"{named}'{nope}' is neither a dataset directory" in err


def test_from_after_to_and_debug_after_the_command(cli) -> None:
    r = cli("backtest", "--scenario", "calm", "--risk", "on", "--from", "2026-01-02",
            "--to", "2026-01-01")
    assert r.code == 2 and "--from 2026-01-02 is not before --to 2026-01-01" in r.err
    r = cli("backtest", "--scenario", "calm", "--risk", "on", "--from", "2026-01-02",
            "--to", "2026-01-01", "--debug")          # the hint says rerun with --debug
    assert r.code == 2 and "No such option" not in r.err and "--from" in r.err
    r = cli("backtest", "--scenario", "calm", "--risk", "on", "--preset", "nosuch")
    assert r.code == 2 and "config problem" not in r.err
    assert "--preset: expected one of conservative, balanced, aggressive" in r.err


def test_status_and_halt_do_not_create_a_store(cli, tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/none.db"
    for cmd in ("status", "halt"):
        r = cli(cmd, "--store", url)
        assert r.code == 2 and "no store at" in r.err and "none.db" in r.err
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize(("store", "said"), [
    ("sqlite://", "an in-memory SQLite database dies with the process"),
    ("sqlite:///:memory:", "an in-memory SQLite database dies with the process"),
    ("", "--store: empty"),                      # silently meant the config's store.url
])
def test_a_daemon_store_must_outlive_the_process(cli, tmp_path, monkeypatch, store, said):
    """`run --store sqlite://` ran on a database no one else could open: `--http` answered
    500 with a traceback (its reader opened a second, empty one), `status` and `halt`
    could not reach the run."""
    monkeypatch.chdir(tmp_path)
    for cmd in (("run", "--replay", "calm"), ("status",), ("halt",)):
        r = cli(*cmd, "--store", store)
        assert r.code == 2 and said in r.err, (cmd, r.err)
    assert list(tmp_path.iterdir()) == []           # not the config's store either


def test_a_relative_sqlite_path_not_found_says_where_it_looked(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("status", "--store", "sqlite:///tmp/x.db")   # three slashes: relative
    assert r.code == 2 and f"looked for {tmp_path}/tmp/x.db" in r.err, r.err
    assert "sqlite:////PATH absolute" in r.err


def test_status_and_halt_do_not_write_liqbot_tables_into_another_database(cli, url) -> None:
    """A database without liqbot's tables (a 0-byte SQLite file, an empty PostgreSQL schema:
    a typo in a database name) is refused; before, `status` created the 13 tables in it."""
    import hashlib
    import sqlite3

    from sqlalchemy import create_engine, inspect

    from bot.store.urls import parse_url

    parsed = parse_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite:                          # another program's database, in rollback-journal mode
        db = Path(parsed.database)
        db.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE theirs (x INTEGER)")
        before = hashlib.sha256(db.read_bytes()).hexdigest()
    for cmd in ("status", "halt"):
        r = cli(cmd, "--store", url)
        assert r.code == 2 and "no liqbot store at" in r.err and "nothing was written" in r.err
    eng = create_engine(parsed)
    try:
        with eng.connect() as conn:
            assert inspect(conn).get_table_names() == (["theirs"] if sqlite else [])
    finally:
        eng.dispose()
    if sqlite:                          # not even switched to WAL (until 2026-12-06 it was)
        assert hashlib.sha256(db.read_bytes()).hexdigest() == before
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.parametrize(("run", "problem"), [
    ('strategy = "nosuch"', "run.strategy: expected one of hold, trend"),
    ('strategy = "hold"\nparams = { leverage = "ten" }', "run.params.leverage: expected float, "
                                                         "got 'ten'"),
    ('preset = "nope"', "run.preset: expected one of conservative, balanced, aggressive"),
])
def test_config_check_reads_the_run_section_as_run_does(cli, tmp_path, run, problem) -> None:
    """`config check` said OK to a [run] section `liqbot run` then refused."""
    f = tmp_path / "c.toml"
    f.write_text(f"[run]\n{run}\n")
    r = cli("config", "check", f)
    assert r.code == 2 and problem in r.out, r.out + r.err


def test_config_check_reports_every_run_problem_at_once(cli, tmp_path) -> None:
    """Four problems in [run]: it printed the wallet's; fixed, the leverage's; fixed, the
    preset's (one a run). All four now, each named by its key."""
    f = tmp_path / "c.toml"
    f.write_text('[run]\nparams = {leverage = 500, fastt = 3}\nstrategy = "trend"\n'
                 'preset = "nosuch"\nwallet = 0\n')
    r = cli("config", "check", f)
    assert r.code == 2
    assert r.out.splitlines() == [
        f"{f}: 4 problems (config file):",
        "run.wallet: expected greater than or equal to 1, got 0",
        "run.params.leverage: expected 0 < leverage <= 125, got 500.0",
        "run.params: trend has no parameter 'fastt'; known: fast, slow, leverage, "
        "allow_short, sizing",
        "run.preset: expected one of conservative, balanced, aggressive or a TOML file, got "
        "'nosuch'"]


def test_heatmap_refuses_options_of_another_mode(cli, synth_dir, tmp_path) -> None:
    """`heatmap DATASET --seeds 1..3` ran the snapshot and ignored --seeds; `--timeline`
    ignored --at and --json. Usage lines name `heatmap validate` as typed."""
    r = cli("heatmap", synth_dir, "--seeds", "1..3")
    assert r.code == 2 and "--seeds: belongs to `heatmap validate`" in r.err, r.err
    r = cli("heatmap", synth_dir, "--timeline", tmp_path / "t.csv", "--at", "2025-01-01",
            "--json")
    assert r.code == 2 and "--at, --json: belong to the snapshot" in r.err, r.err
    assert not (tmp_path / "t.csv").exists()
    r = cli("heatmap", "--json", "validate", "--tiers", tmp_path / "t.json")
    assert r.code == 2 and "--tiers: `heatmap validate` scores synthetic days" in r.err
    r = cli("heatmap", "validate", "--help")
    assert r.code == 0 and "liqbot heatmap validate [OPTIONS]" in r.out
    assert "heatmap-validate" not in r.out


def test_output_to_a_pipe_is_wide(monkeypatch) -> None:
    """Piped or redirected, rich printed 80 columns and cut wide tables' headers (a sweep
    over three parameters); $COLUMNS still decides when set."""
    from bot.cli.paths import PIPE_WIDTH, console
    monkeypatch.delenv("COLUMNS", raising=False)
    assert console().width == PIPE_WIDTH == 160 and console(stderr=True).width == 160
    monkeypatch.setenv("COLUMNS", "100")
    assert console().width == 100


def test_message_lines_to_a_pipe_are_not_wrapped_but_tables_fit(monkeypatch, capsys) -> None:
    """Piped, the daemon's final line was cut at 160 columns mid-field ("... equity
    138,494.81; bar / close -> intent p50 ..."), as were long notices and status texts:
    line-based log parsing broke. Message lines now stay whole; tables still fit."""
    from rich.table import Table

    from bot.cli.paths import PIPE_WIDTH, console
    monkeypatch.delenv("COLUMNS", raising=False)
    line = ("run paper-20261206T185659-5323c3 finished in 14.1 s: 4,320 bars, 3 orders, 3 fills, "
            "0 liquidations, equity 138,494.81; bar close -> intent p50 219 us, p99 237 us "
            "[bold]and[/] more, " * 2).strip()
    con = console()
    con.print(line)
    con.print("[bold]drill[/] " + "x" * 200)
    t = Table(title="wide")
    t.add_column("name")
    t.add_column("text")
    t.add_row("a", "word " * 80)
    con.print(t)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == line.replace("[bold]", "").replace("[/]", "")
    assert out[1] == "drill " + "x" * 200
    table = out[2:]
    assert len(table) > 4 and max(len(x) for x in table) == PIPE_WIDTH
    assert table[0].strip() == "wide" and table[0].startswith(" " * 70)   # title centred
    assert all(x.startswith(("┏", "┃", "┡", "│", "└")) for x in table[1:])


def test_short_backtests_flag_their_annualised_ratios(cli, synth_dir) -> None:
    """A 49-bar backtest printed Sharpe -104 as if it meant something."""
    r = cli("backtest", synth_dir, "--risk", "off", "--from", "2026-01-01T12:00Z",
            "--to", "2026-01-01T12:49Z")
    assert r.code == 0, r.err
    assert "49 bars" in r.out
    assert "Sharpe and Sortino are annualised from 0.034 day(s) of bars: indicative only on " \
           "fewer than 30" in r.out


def test_run_refuses_options_it_would_ignore(cli, tmp_path) -> None:
    """`run --speed 60` on the exchange feed and `run --live --wallet X` ignored them."""
    url = f"sqlite:///{tmp_path}/r.db"
    r = cli("run", "--speed", "60", "--store", url)
    assert r.code == 2 and "--speed: only with --replay" in r.err, r.err
    cfg = tmp_path / "live.toml"
    cfg.write_text('mode = "live"\n')
    r = cli("--config", cfg, "run", "--live", "--wallet", "5000", "--store", url)
    assert r.code == 2 and "--wallet: a paper wallet" in r.err, r.err
    assert not (tmp_path / "r.db").exists()


def test_a_run_that_cannot_start_is_left_stopped(cli, tmp_path) -> None:
    """No network: exit 1 'This is a bug', and `status` then showed the run `running` with
    state None. Now exit 2 naming the host; the run is `stopped` (the same options resume
    it) and status prints '-' for what it has not seen."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[download]\nccxt_base_url = "http://127.0.0.1:9"\ntimeout_s = 2\n')
    url = f"sqlite:///{tmp_path}/n.db"
    r = cli("--config", cfg, "run", "--store", url)
    assert r.code == 2 and "cannot reach binanceusdm at http://127.0.0.1:9" in r.err, r.err
    r = cli("status", "--store", url)
    assert r.code == 0 and "(paper, stopped)" in r.out
    assert "state - (no bar processed yet)" in r.out and "last bar -" in r.out
    assert "None" not in r.out
    # the parameters it runs with (status named the strategy only)
    assert "hold(side=long, leverage=10.0, sizing=entry) / balanced on BTCUSDT" in r.out, r.out


def test_a_strategy_without_a_stream_is_refused_before_a_run_is_opened(cli, tmp_path) -> None:
    """It failed only after the paper run was created, which then stayed `stopped`."""
    url = f"sqlite:///{tmp_path}/ns.db"
    r = cli("run", "--replay", "calm", "--strategy", "tests.test_strategies:Peeking",
            "--store", url)
    assert r.code == 2 and "has no streaming form, so it cannot run live" in r.err, r.err
    assert not (tmp_path / "ns.db").exists()


@needs_proc
def test_an_unwritable_log_file_is_a_config_problem(cli, tmp_path) -> None:
    """`logging.file` under /proc passed `config check`, and `run` then exited 1 ('This is
    a bug') on FileNotFoundError; a directory gave IsADirectoryError."""
    url = f"sqlite:///{tmp_path}/l.db"
    for value, problem in (("/proc/nope/x.log", "logging.file: /proc/nope/x.log cannot be "
                                                "written"),
                           (str(tmp_path), f"logging.file: {tmp_path} is a directory")):
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[logging]\nfile = "{value}"\n')
        r = cli("config", "check", cfg)
        assert r.code == 2 and problem in r.out, r.out
        r = cli("--config", cfg, "run", "--replay", "calm", "--store", url)
        assert r.code == 2 and "logging.file: " in r.err, r.err
    assert not (tmp_path / "l.db").exists()             # refused before the run was opened
    cfg.write_text(f'[logging]\nfile = "{tmp_path}/new/sub/x.log"\n')
    assert cli("config", "check", cfg).code == 0 and not (tmp_path / "new").exists()


def test_values_from_the_config_are_named_by_their_keys(cli, tmp_path) -> None:
    """`run` blamed --param for a [run] params value and `backtest` blamed --scenario for
    data.source, though neither option was given."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nstrategy = "hold"\nparams = { fast = "x" }\n')
    url = f"sqlite:///{tmp_path}/p.db"
    r = cli("--config", cfg, "run", "--replay", "calm", "--store", url)
    assert r.code == 2 and "run.params: hold has no parameter 'fast'" in r.err, r.err
    r = cli("--config", cfg, "run", "--replay", "calm", "--param", "fast=3", "--store", url)
    assert r.code == 2 and "--param: hold has no parameter 'fast'" in r.err, r.err
    cfg.write_text('[data]\nsource = "/nonexistent/dir"\n')
    r = cli("--config", cfg, "backtest", "--risk", "off")
    assert r.code == 2 and "data.source: '/nonexistent/dir' is neither" in r.err, r.err


def test_config_params_the_chosen_strategy_has_are_kept(tmp_path, capsys) -> None:
    """`run.params = { leverage = 3 }` with `--strategy trend` ran trend at its default 5x:
    every config param was dropped silently when --strategy was given. Now the ones the
    strategy has are kept (the command line still wins), the others named on stderr."""
    from bot.cli.run import run_choices
    from bot.config import load_config

    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nparams = { leverage = 3, side = "short" }\n')
    c = load_config(cfg, env={})
    strat = run_choices(c, "trend", None, None, None, None)[0]
    assert strat.name == "trend" and strat.params["leverage"] == 3.0
    err = " ".join(capsys.readouterr().err.split())
    assert "run.params side not used: --strategy trend has no such parameter" in err
    strat = run_choices(c, "trend", ["leverage=2"], None, None, None)[0]
    assert strat.params["leverage"] == 2.0                 # the command line wins
    capsys.readouterr()
    strat = run_choices(c, "hold", None, None, None, None)[0]   # its own strategy: all kept
    assert strat.params["side"] == "short" and strat.params["leverage"] == 3.0
    assert capsys.readouterr().err == ""


def test_json_meta_preset_is_null_when_no_preset_ran(cli, synth_dir, tmp_path) -> None:
    """`--risk off` printed "preset -" while the JSON said "balanced"."""
    import json

    r = cli("backtest", synth_dir, "--risk", "off", "--json", tmp_path / "b.json")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "b.json").read_text())["meta"]["preset"] is None
    r = cli("backtest", synth_dir, "--risk", "on", "--preset", "conservative", "--json",
            tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["meta"]["preset"] == "conservative"


@pytest.mark.parametrize("columns", ["0", "1", "-5", "abc", ""])
def test_an_unusable_columns_value_hides_nothing(cli, monkeypatch, columns: str) -> None:
    """COLUMNS=0 made rich print nothing at all, the error message included (exit 2 in
    silence); 1 printed a character a line. Below 40 or not a number it is ignored."""
    monkeypatch.setenv("COLUMNS", columns)
    r = cli("backtest", "--scenario", "calm", "--risk", "on", "--param", "leverage=abc")
    assert r.code == 2 and "--param leverage: expected float, got 'abc'" in r.err, r.err
    r = cli("calc", "liquidation", "--exchange", "binance", "--side", "long", "--entry",
            "100000", "--qty", "1", "--leverage", "10")
    assert r.code == 0 and "liquidation price" in r.out and "90,402.01" in r.out, r.out


def test_fill_gaps_and_allow_gaps_together_are_refused(cli, synth_dir, tmp_path) -> None:
    r = cli("data", "import", synth_dir / "bars.parquet", "--fill-gaps", "--allow-gaps",
            "--out", tmp_path / "x")
    assert r.code == 2 and "--fill-gaps and --allow-gaps contradict each other" in r.err
    assert not (tmp_path / "x").exists()


def test_a_param_given_twice_is_refused(cli) -> None:
    """`--param leverage=5 --param leverage=6` silently ran 6x (sweep refuses a repeated
    --grid the same way)."""
    r = cli("backtest", "--scenario", "calm", "--param", "leverage=5", "--param", "leverage=6")
    assert r.code == 2 and "--param leverage: given twice ('5' and '6')" in r.err, r.err


def test_status_names_each_symbol_and_its_leg(cli, tmp_path):
    """Several symbols: the last decision, crowding and clusters named no symbol, and an
    ETHUSDT main position showed as "slot 2"."""
    cfg = tmp_path / "eth.toml"
    cfg.write_text('[data.synthetic]\nsymbol = "ETHUSDT"\nstart_price = 3000\n')
    assert cli("data", "synth", "--seed", "7", "--days", "1", "--out", tmp_path / "btc").code == 0
    assert cli("--config", cfg, "data", "synth", "--seed", "4", "--days", "1", "--out",
               tmp_path / "eth").code == 0
    url = f"sqlite:///{tmp_path}/s.db"
    r = cli("run", "--replay", tmp_path / "btc", "--replay", tmp_path / "eth", "--strategy",
            "hold", "--param", "leverage=3", "--store", url)
    assert r.code == 0, r.err
    r = cli("status", "--store", url)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    for sym in ("BTCUSDT", "ETHUSDT"):
        assert any(x.startswith(f"{sym} at 2026-01-01T23:59:00Z: ") for x in lines), r.out
        assert any(x.startswith(f"{sym} crowding long ") for x in lines), r.out
    rows = [x for x in lines if "ETHUSDT" in x and "│" in x]
    assert rows and "main" in rows[0] and "│ 2 " not in rows[0]
    r = cli("status", "--http", "http://127.0.0.1:9", "--run", "x", "--store", url)
    assert r.code == 2 and "--store and --run with --http: the daemon at the URL reports " \
        "its own run" in " ".join(r.err.split())


def test_small_config_and_store_messages(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LIQBOT_EXCHANGE__SYMBOLS", "[]")
    r = cli("config", "check", "config/default.toml")
    assert r.code == 2 and "exchange.symbols: expected at least one item, got an empty " \
        "list (from the environment: LIQBOT_EXCHANGE__SYMBOLS)" in " ".join(r.out.split())
    monkeypatch.delenv("LIQBOT_EXCHANGE__SYMBOLS")
    r = cli("status", "--store", f"sqlite:///{tmp_path}/s.db?x=1")
    assert r.code == 2 and "a SQLite store takes no query options (got x)" in r.err
    assert "SAWarning" not in r.err


def test_a_replay_run_recorded_by_path_before_the_data_digest_still_resumes(cli, tmp_path):
    """Runs started before 2026-12-06 recorded their --replay text in the fingerprint;
    the same command must still resume them (not abandon them as "other data")."""
    import json
    import sqlite3

    from bot.cli.run import _fingerprint

    ds = tmp_path / "ds"
    assert cli("data", "synth", "--seed", "3", "--days", "1", "--out", ds).code == 0
    url = f"sqlite:///{tmp_path}/s.db"
    args = ("run", "--replay", str(ds), "--store", url, "--param", "leverage=3")
    assert cli(*args).code == 0
    con = sqlite3.connect(tmp_path / "s.db")                 # as an older liqbot left it
    run_id, cfg = con.execute("select run_id, config from runs").fetchone()
    cfg = json.loads(cfg)
    cfg["spec"]["source"] = {"replay": [str(ds)]}
    cfg["fingerprint"] = _fingerprint(cfg["spec"])
    con.execute("update runs set config = ?, status = 'stopped'", (json.dumps(cfg),))
    con.commit()
    con.close()
    r = cli(*args)
    assert r.code == 0 and f"resuming run {run_id}" in r.err, r.err
    con = sqlite3.connect(tmp_path / "s.db")
    cfg["spec"]["source"] = {"replay": [f"{ds}/other"]}           # another path: not resumed
    cfg["fingerprint"] = _fingerprint(cfg["spec"])
    con.execute("update runs set config = ?, status = 'stopped'", (json.dumps(cfg),))
    con.commit()
    con.close()
    r = cli(*args)
    assert r.code == 0 and f"run {run_id} (stopped) differs from this start in the data " \
        f"(--replay {ds}/other, recorded by path" in " ".join(r.err.split()), r.err


def test_an_empty_replay_is_named_by_its_option(cli, tmp_path) -> None:
    r = cli("run", "--replay", "", "--store", f"sqlite:///{tmp_path}/s.db")
    assert r.code == 2 and "--replay: empty; give a dataset directory or a scenario" in r.err
    assert not (tmp_path / "s.db").exists()


def test_the_feed_reads_the_venue_the_orders_go_to(cli, tmp_path, monkeypatch) -> None:
    """`live.rest_url` / `ws_url` point the broker at an emulator; the exchange feed kept
    reading download.ccxt_base_url and Binance's own streams, so a run would have traded the
    emulator on production prices."""
    from bot.runtime import exchange_feed

    seen: dict = {}

    class Recorder:
        def __init__(self, symbols, **kw) -> None:
            seen.update(kw)
            raise LiqbotError("recorded")

    monkeypatch.setattr(exchange_feed, "ExchangeFeed", Recorder)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[live]\nrest_url = "http://127.0.0.1:8911"\nws_url = "ws://127.0.0.1:8911/ws"\n'
                   '[download]\nccxt_base_url = "http://127.0.0.1:9999"\n')
    r = cli("--config", cfg, "run", "--store", f"sqlite:///{tmp_path}/s.db")
    assert r.code == 2 and "recorded" in r.err
    assert (seen["rest_base_url"], seen["ws_base_url"]) == ("http://127.0.0.1:8911",
                                                            "ws://127.0.0.1:8911/ws")
    cfg.write_text('[download]\nccxt_base_url = "http://127.0.0.1:9999"\n')   # no emulator
    r = cli("--config", cfg, "run", "--store", f"sqlite:///{tmp_path}/s.db")
    assert (seen["rest_base_url"], seen["ws_base_url"]) == ("http://127.0.0.1:9999", None)
