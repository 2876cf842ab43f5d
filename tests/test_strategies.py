"""Strategies: causality, behaviour on synthetic cascades, lookup and the backtest CLI."""

import json
from typing import ClassVar

import numpy as np
import pytest

from backtests import lookahead
from bot.data.bars import Bars
from bot.data.synthetic import SynthSpec, generate
from bot.errors import LiqbotError, UserCodeError
from bot.mechanics.brackets import shipped
from bot.signals import pipeline
from strategies import BUILTIN, find
from strategies.base import Param, Strategy, targets_of

BTC = shipped("binance", "BTCUSDT")


class Peeking(Strategy):
    """Long while price is below the series' LAST close: the classic full-sample leak."""

    name = "peeking"
    PARAMS: ClassVar[dict[str, Param]] = {"leverage": Param(float, 2.0, "")}

    def targets(self, bars, signals):
        return np.where(bars.close < bars.close[-1], 2.0, -2.0)


class Dodging(Strategy):
    """Long 10x, flat whenever the next hour's low is 2% under the close: a leak that acts
    only before drops, so even prefix cuts rarely land in the hour it looked ahead."""

    name = "dodging"
    PARAMS: ClassVar[dict[str, Param]] = {"leverage": Param(float, 10.0, "")}

    def targets(self, bars, signals):
        low = bars["low"]
        ahead = np.array([low[t + 1:t + 61].min() if t + 1 < len(low) else np.inf
                          for t in range(len(low))])
        return np.where(ahead < 0.98 * bars.close, 0.0, 10.0)


class Smoothing(Strategy):
    """Writes into its input bars (a user error: they are shared and read-only)."""

    name = "smoothing"
    PARAMS: ClassVar[dict[str, Param]] = {"leverage": Param(float, 1.0, "")}

    def targets(self, bars, signals):
        c = bars["close"]
        c[1:] = 0.5 * (c[1:] + c[:-1])
        return np.ones(len(c))


class CallsUsBadly(Strategy):
    """Its error is raised inside liqbot's own code (bot/): reported as ours, not theirs."""

    name = "calls_us_badly"
    PARAMS: ClassVar[dict[str, Param]] = {"leverage": Param(float, 1.0, "")}

    def targets(self, bars, signals):
        return Bars(bars.symbol, -1, dict(bars.columns)).close


def test_targets_of_blames_user_code_only_for_its_own_errors(crowded):
    ds, sig = crowded
    with pytest.raises(UserCodeError, match=r"Smoothing: targets\(\) raised ValueError at "
                                            r"test_strategies.py:\d+: assignment destination"):
        targets_of(Smoothing(), ds.bars, sig)
    with pytest.raises(ValueError, match="interval_ms must be positive") as info:
        targets_of(CallsUsBadly(), ds.bars, sig)
    assert not isinstance(info.value, LiqbotError)
    # what it returns is checked in the same place: one finite leverage per bar
    short, nan = Peeking(), Peeking()
    short.targets = lambda bars, signals: np.ones(3)            # type: ignore[method-assign]
    nan.targets = lambda bars, signals: np.full(len(bars), np.nan)  # type: ignore[method-assign]
    with pytest.raises(UserCodeError, match=rf"returned shape \(3,\) for {len(ds.bars)} bars; "
                                            rf"expected .* shape \({len(ds.bars)},\)"):
        targets_of(short, ds.bars, sig)
    with pytest.raises(UserCodeError, match=rf"non-finite values on {len(ds.bars):,} of "):
        targets_of(nan, ds.bars, sig)
    assert np.isnan(targets_of(nan, ds.bars, sig, finite=False)).all()   # the daemon's stream
    tg = targets_of(find("hold")(), ds.bars, sig)
    assert tg.dtype == np.float64 and tg.flags.c_contiguous and (tg == 10.0).all()


@pytest.fixture(scope="module")
def crowded():
    ds = generate(SynthSpec(seed=2, days=3, crowding="long"))
    return ds, pipeline.compute(ds.bars, BTC)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_strategies_are_causal(crowded, name):
    ds, sig = crowded
    found = lookahead.check(ds.bars, sig, BUILTIN[name](), BTC, cuts=3)
    assert found.violation is None and found.prefixes >= 3


def test_lookahead_check_catches_a_peeking_strategy(crowded):
    ds, sig = crowded
    bad = lookahead.check(ds.bars, sig, Peeking(), BTC, cuts=3).violation
    assert bad is not None and bad[1] < bad[0]


def test_lookahead_check_catches_a_leak_that_acts_only_before_drops(crowded):
    """Even cuts alone passed it (five days of 2025-10: +53%, where `hold` 10x was
    liquidated); the prefixes ending at its target changes hide the drop it foresaw."""
    ds, sig = crowded
    full = Dodging().targets(ds.bars, sig)
    assert 0 < (full == 0.0).sum() < len(full)          # it does dodge here
    assert lookahead.check(ds.bars, sig, Dodging(), BTC, cuts=5, at_changes=0).violation \
        is None                                          # the even cuts miss it
    bad = lookahead.check(ds.bars, sig, Dodging(), BTC, cuts=5).violation
    assert bad is not None and full[bad[0] - 1] != full[bad[0] - 2]   # at a change


class Momentum(Strategy):
    """Long when the close is above the close LOOKBACK bars before; its stream keeps
    WINDOW bars, enough when WINDOW > LOOKBACK."""

    name = "momentum_test"
    LOOKBACK = 120
    WINDOW = 121
    PARAMS: ClassVar[dict[str, Param]] = {"leverage": Param(float, 2.0, "")}

    def targets(self, bars, signals):
        c = bars.close
        out = np.zeros(len(c))
        k = self.LOOKBACK
        if len(c) > k:        # a window shorter than the lookback never sees a reference
            out[k:] = np.where(c[k:] > c[:-k], self.params["leverage"], 0.0)
        return out


class ShortWindowMomentum(Momentum):
    name = "momentum_short_window_test"
    WINDOW = 60


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_streams_trade_the_backtest_targets(crowded, name):
    """What paper and live trading step bar by bar equals the backtest's targets."""
    ds, sig = crowded
    s = BUILTIN[name]()
    got = lookahead.stream_check(ds.bars, s, BTC, targets_of(s, ds.bars, sig))
    assert got.form == "exact" and got.bars == len(ds.bars) and got.violation is None


def test_stream_check_catches_a_window_too_short(crowded):
    """A WINDOW shorter than the history targets() reads: the paper run trades
    differently from the backtest, silently (a review: 5 trades backtested, 0 in paper);
    --check-lookahead now says so. With WINDOW covering the lookback it passes."""
    ds, sig = crowded
    ok = lookahead.stream_check(ds.bars, Momentum(), BTC, targets_of(Momentum(), ds.bars, sig))
    assert ok.form == "window 121" and ok.violation is None and ok.bars >= 64
    short = ShortWindowMomentum()
    full = targets_of(short, ds.bars, sig)
    bad = lookahead.stream_check(ds.bars, short, BTC, full)
    assert bad.form == "window 60" and bad.violation is not None
    t, got, want = bad.violation
    assert got == 0.0 and want == 2.0 == full[t]       # the window never sees its reference


def test_check_lookahead_cli_refuses_a_stream_that_differs(cli):
    r = cli("backtest", "--scenario", "calm", "--strategy",
            "tests.test_strategies:ShortWindowMomentum", "--risk", "on", "--check-lookahead")
    assert r.code == 2, r.err
    msg = " ".join(r.err.split())
    assert "stream (what paper and live trading run, window 60) trades 0 at bar" in msg
    assert "raise WINDOW to cover the longest history it reads" in msg
    r = cli("backtest", "--scenario", "calm", "--strategy", "tests.test_strategies:Momentum",
            "--risk", "on", "--check-lookahead")
    assert r.code == 0, r.err
    assert "stream check: the paper/live stream (window 121) trades the backtest's targets" \
        in " ".join(r.out.split() + r.err.split())


def test_lookahead_prefixes_end_at_target_changes():
    full = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # even cuts of 12 bars in 6 parts: 2, 4, 6, 8, 10; changes at bars 2 and 4: 3 and 5
    assert lookahead.prefixes(full, cuts=5) == [2, 3, 4, 5, 6, 8, 10]
    many = np.arange(100.0)                              # a change at every bar: 4 spread
    assert lookahead.prefixes(many, cuts=1, at_changes=4) == [2, 35, 50, 67]  # not 100: all
    assert lookahead.prefixes(np.zeros(1)) == lookahead.prefixes(np.zeros(2)) == []


def test_hold_and_trend_targets(crowded):
    ds, sig = crowded
    assert np.all(find("hold")(side="short", leverage=7).targets(ds.bars, sig) == -7.0)
    tr = find("trend")(fast=10, slow=50, leverage=4).targets(ds.bars, sig)
    assert set(np.unique(tr)) <= {-4.0, 0.0, 4.0}
    flat = find("trend")(fast=10, slow=50, leverage=4, allow_short=0).targets(ds.bars, sig)
    assert flat.min() == 0.0


def test_trend_is_flat_until_it_has_seen_slow_bars():
    """A rise from the second bar: the EMAs (both seeded with the first close) crossed at
    once and `trend` bought 5x on bar 1, on two EMAs of two closes. Now flat for the first
    slow - 1 bars, long from the slow-th (index slow - 1); the stream agrees bar by bar."""
    from strategies.trend import trend_steps
    close = 100.0 + np.arange(30.0)
    tg = trend_steps(close, 3, 10, 5.0, -5.0)
    assert np.all(tg[:9] == 0.0) and np.all(tg[9:] == 5.0)
    close = 100.0 - np.arange(30.0)
    assert np.all(trend_steps(close, 3, 10, 5.0, 0.0) == 0.0)          # allow_short=0
    np.testing.assert_array_equal(trend_steps(close, 3, 10, 5.0, -5.0)[8:10], [0.0, -5.0])


def test_cascade_fade_buys_after_exhaustion(crowded):
    ds, sig = crowded
    from bot.signals import detectors as dt
    tgt = find("cascade_fade")(leverage=3).targets(ds.bars, sig)
    ex = np.flatnonzero(sig.detectors[:, dt.D_EXHAUSTION_STATE] == 1.0)
    entries = np.flatnonzero((tgt > 0) & (np.r_[0.0, tgt[:-1]] == 0))
    assert len(entries) >= 1 and entries[0] in set(ex.tolist())
    assert set(np.unique(tgt)) <= {0.0, 3.0}


def test_funding_skew_fades_crowded_longs(crowded):
    ds, sig = crowded
    tgt = find("funding_skew")(leverage=2).targets(ds.bars, sig)
    assert (tgt < 0).any() and not (tgt > 0).any()


def test_lookup_errors():
    with pytest.raises(LiqbotError, match="expected one of hold"):
        find("martingale")
    with pytest.raises(LiqbotError, match="cannot load"):
        find("nope.module:X")
    with pytest.raises(LiqbotError, match="has no parameter 'speed'"):
        find("hold")(speed=3)
    with pytest.raises(LiqbotError, match="--param side: expected one of long, short"):
        find("hold")(side="up")
    with pytest.raises(LiqbotError, match="0 < leverage <= 125"):
        find("hold")(leverage=500)
    assert find("tests.test_strategies:Peeking") is Peeking


def test_backtest_cli_json_and_report(cli, tmp_path):
    out, rep = tmp_path / "r.json", tmp_path / "r.html"
    r = cli("backtest", "--scenario", "synthetic:3:long:2", "--strategy", "hold", "--param",
            "side=long", "--param", "leverage=10", "--risk", "compare", "--json", out,
            "--report", rep, "--check-lookahead")
    assert r.code == 0, r.err
    assert "is causal on" in r.out and "prefixes (5 even, the rest ending where its target " \
        "changes)" in " ".join(r.out.split()) and "risk interventions" in r.out
    d = json.loads(out.read_text())
    for run in ("off", "on"):
        assert {"total_return", "max_drawdown", "liquidations", "fees", "funding", "n_trades",
                "n_risk_actions"} <= set(d["runs"][run])
    assert d["runs"]["off"]["n_risk_actions"] == 0
    html = rep.read_text()
    assert html.startswith("<!doctype html>") and html.count("<svg") == 4  # price, map, lev, equity
    assert "<script" not in html and "http" not in html.split("<svg", 1)[0].lower()


def test_backtest_cli_errors(cli, tmp_path):
    r = cli("backtest", "--scenario", "calm", "--risk", "maybe")
    assert r.code == 2 and "--risk: expected on, off or compare" in r.err
    r = cli("backtest", tmp_path, "--scenario", "calm")
    assert r.code == 2 and "not both" in r.err
    r = cli("backtest", "--scenario", "nowhere")
    assert r.code == 2 and "neither a dataset directory" in r.err
    r = cli("backtest", "--scenario", "calm", "--param", "leverage")
    assert r.code == 2 and "--param: expected key=value" in r.err
    r = cli("backtest", "--scenario", "calm", "--preset", "yolo")
    assert r.code == 2 and "--preset: expected one of conservative, balanced, aggressive" in r.err
    r = cli("backtest", "--scenario", "calm", "--strategy", "tests.test_strategies:Peeking",
            "--check-lookahead", "--risk", "off")
    assert r.code == 2 and "is NOT causal" in r.err
    # a user strategy's own error is its error (exit 2 naming it), with a hint for writes
    r = cli("backtest", "--scenario", "calm", "--strategy", "tests.test_strategies:Smoothing")
    assert r.code == 2 and "strategy tests.test_strategies:Smoothing: targets() raised " \
        "ValueError at test_strategies.py:" in r.err and ".copy()" in r.err
    assert "assignment destination is read-only" in r.err and "Traceback" not in r.err
    r = cli("--debug", "backtest", "--scenario", "calm", "--strategy",
            "tests.test_strategies:Smoothing")
    assert r.code == 2 and "Traceback" in r.err and "c[1:] = 0.5" in r.err   # their code
    r = cli("backtest", "--scenario", "calm", "--from", "2026-01-02", "--to", "2026-01-02T00:05Z",
            "--risk", "off")
    assert r.code == 2 and "fewer than 10 bars" in r.err


def test_backtest_defaults_to_the_configured_source(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LIQBOT_DATA__SYNTHETIC__DAYS", "1")
    out = tmp_path / "r.json"
    r = cli("backtest", "--risk", "off", "--json", out)
    assert r.code == 0, r.err
    meta = json.loads(out.read_text())["meta"]
    assert meta["source"] == "config data.source = 'synthetic'" and meta["bars"] == 1440
    monkeypatch.setenv("LIQBOT_DATA__SOURCE", str(tmp_path / "missing"))
    r = cli("backtest", "--risk", "off")
    assert r.code == 2 and "neither a dataset directory" in r.err


def test_presets_load_and_order():
    from bot.risk.policy import load_policy
    c, b, a = (load_policy(n) for n in ("conservative", "balanced", "aggressive"))
    assert c.max_leverage < b.max_leverage < a.max_leverage
    assert c.max_drawdown < b.max_drawdown < a.max_drawdown


# --- writing your own strategy: loading and declaring it -----------------------------------

_MINIMAL = '''
import numpy as np
from strategies.base import Strategy


class Flat(Strategy):
    WINDOW = 1

    def targets(self, bars, signals):
        return np.zeros(len(bars))
'''


def _user_module(tmp_path, monkeypatch, name: str, source: str) -> None:
    """A user's strategy file `name`.py in tmp_path, the current directory (not on sys.path)."""
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path
                                     if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(__import__("sys").modules, name, raising=False)


def test_a_strategy_file_in_the_current_directory_loads(tmp_path, monkeypatch):
    """`cd mydir && liqbot backtest --strategy mystrat:Flat` found no module: the console
    script's sys.path holds .venv/bin, not the current directory."""
    _user_module(tmp_path, monkeypatch, "ustrat_cwd", _MINIMAL)
    cls = find("ustrat_cwd:Flat")
    assert cls.__name__ == "Flat"
    with pytest.raises(LiqbotError, match=r"No module named 'ustrat_nowhere'; run liqbot from "
                                          r"the directory that holds ustrat_nowhere.py"):
        find("ustrat_nowhere:Flat")


def test_errors_importing_a_user_strategy_are_theirs(tmp_path, monkeypatch, cli):
    """A SyntaxError or a failing top-level statement in the user's file was 'unexpected
    error ... a bug in liqbot' (exit 1); it is theirs: exit 2 naming file and line."""
    _user_module(tmp_path, monkeypatch, "ustrat_syntax", "import numpy\nx = (\n")
    with pytest.raises(UserCodeError, match=r"importing ustrat_syntax raised SyntaxError at "
                                            r"ustrat_syntax.py:2: '\(' was never closed"):
        find("ustrat_syntax:X")
    _user_module(tmp_path, monkeypatch, "ustrat_boom", "x = 1\nraise RuntimeError('no key')\n")
    r = cli("backtest", "--scenario", "calm", "--strategy", "ustrat_boom:X")
    assert r.code == 2 and "importing ustrat_boom raised RuntimeError at ustrat_boom.py:2: " \
        "no key" in r.err, r.err
    # a declaration no value could satisfy is refused where it is written
    _user_module(tmp_path, monkeypatch, "ustrat_decl", _MINIMAL + '''
from strategies.base import Param


class Modes(Flat):
    PARAMS = {"mode": Param(int, 1, "m", choices=("1", "2"))}
''')
    with pytest.raises(UserCodeError, match=r"ustrat_decl.py:16: Param choices must be int "
                                            r"values like the parameter; got '1'"):
        find("ustrat_decl:Modes")


class _Relations(Strategy):
    name = "relations"
    PARAMS: ClassVar[dict[str, Param]] = {"leverage": Param(float, 1.0, ""),
                                          "fast": Param(int, 5, "", lo=1)}

    def check(self):
        self.require(self.params["fst"] < 10, "fast", "fast < 10")   # a typo: KeyError

    def targets(self, bars, signals):
        return np.zeros(len(bars))


def test_an_error_in_a_user_check_is_theirs():
    """check() raising KeyError was reported as a bug in liqbot (exit 1)."""
    with pytest.raises(UserCodeError, match=r"strategy tests.test_strategies:_Relations: "
                                            r"check\(\) raised KeyError at test_strategies.py:"
                                            r"\d+: 'fst'"):
        _Relations()
    from strategies.trend import Trend
    with pytest.raises(LiqbotError, match="--param fast: expected fast < slow"):
        Trend(fast=10, slow=5)                           # a declared relation: unchanged


def test_bool_params_parse_false_as_false():
    """Param(bool, ...) did bool('0') and bool('false'): both True."""
    p = Param(bool, False, "allow shorts")
    assert [p.parse("short", v) for v in ("0", "false", "No", "off", 0, False)] == [False] * 6
    assert [p.parse("short", v) for v in ("1", "TRUE", "yes", " on ", 1, True)] == [True] * 6
    for bad in ("2", "maybe", "", 0.5):
        with pytest.raises(LiqbotError, match=r"--param short: expected true or false"):
            p.parse("short", bad)
    with pytest.raises(LiqbotError, match="Param kind must be one of float, int, str, bool"):
        Param(list, [], "no")
    assert Param(float, 1.0, "", choices=(1, 2.5)).parse("x", "1") == 1.0


def test_an_invalid_declared_default_is_named_as_a_declaration():
    """A default outside its own bounds said '--param frac: expected ...' as if the user
    had passed --param frac."""

    class Frac(_Relations):
        PARAMS: ClassVar[dict[str, Param]] = {"frac": Param(float, 1.5, "", lo=0.0, hi=1.0)}

        def check(self):
            pass

    with pytest.raises(LiqbotError, match=r"the default of frac declared in its "
                                          r"PARAMS\['frac'\] is invalid .*pass --param frac="):
        Frac()
    assert Frac(frac=0.5).params["frac"] == 0.5

    class Fixed(Frac):
        SIZING = "fixed"

    with pytest.raises(LiqbotError, match="default of sizing declared in its SIZING"):
        Fixed(frac=0.5)


def test_an_unnamed_user_strategy_is_named_after_its_class():
    """Unnamed strategies were all 'base': two of them shared describe(), and so a paper
    run's identity and its checkpoints."""

    class One(Strategy):
        WINDOW = 2

        def targets(self, bars, signals):
            return np.ones(len(bars))

    class Two(One):
        pass

    class Named(One):
        name = "named"

    class Child(Named):
        pass

    assert One.name.endswith(":test_an_unnamed_user_strategy_is_named_after_its_class."
                             "<locals>.One") and Two.name.endswith("<locals>.Two")
    assert One().describe() != Two().describe()
    assert Child.name == "named" and find("hold").name == "hold"
    with pytest.raises(LiqbotError, match="strategy checkpoint: made by"):
        Two().stream_from(One().stream().state())


def test_errors_name_the_users_line_not_the_library_function_it_called(crowded):
    """A bad numpy call was reported 'at numeric.py:902' (numpy's line), not theirs."""
    ds, sig = crowded

    class Convolves(_Relations):
        def check(self):
            pass

        def targets(self, bars, signals):
            return np.convolve(bars.close, np.ones(5), mode="sideways")

    with pytest.raises(UserCodeError, match=r"targets\(\) raised ValueError at "
                                            r"test_strategies.py:\d+: Use one of"):
        targets_of(Convolves(), ds.bars, sig)


def test_non_finite_targets_name_the_first_bar(crowded):
    """'returned shape (n,) or non-finite values' named neither which nor where."""
    ds, sig = crowded

    class Warms(_Relations):
        def check(self):
            pass

        def targets(self, bars, signals):
            out = np.ones(len(bars))
            out[:30] = np.nan
            out[100] = np.inf
            return out

    with pytest.raises(UserCodeError, match=r"non-finite values on 31 of 4,320 bars, first nan "
                                            r"at bar 0 \(2026-01-01T00:00:00Z\)"):
        targets_of(Warms(), ds.bars, sig)


def test_a_runs_layout_holds_its_strategys_state_size():
    """`trend` went from 3 state slots to 4 (its warm-up count): a run started by the older
    version resumed and failed on its checkpoint ("state array of the wrong shape"). The
    run's layout now holds the strategy's state size, so such a run starts anew, saying
    why (liqbot's state layout)."""
    from bot.cli.run import _strategy_layout

    class Windowed(Strategy):
        name = "windowed"
        WINDOW = 7
        PARAMS: ClassVar[dict[str, Param]] = {}

        def targets(self, bars, signals):  # noqa: ANN001, ANN201
            return np.zeros(len(bars))

    assert _strategy_layout(find("trend")()) == 4
    assert _strategy_layout(find("sma_cross")(slow=80)) == 2 + 81
    assert _strategy_layout(Windowed()) == 7
