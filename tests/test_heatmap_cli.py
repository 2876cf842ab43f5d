import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    from bot.data import dataset
    from bot.data.synthetic import SynthSpec, generate
    d = tmp_path_factory.mktemp("s") / "ds"
    dataset.save(generate(SynthSpec(seed=1, days=3)), d)
    return d


def test_heatmap_json_shape(cli, synth_dir):
    r = cli("heatmap", synth_dir, "--at", "2026-01-03T12:00Z", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["at"] == "2026-01-03T12:00:00Z"
    assert {"price", "side", "notional", "distance_pct"} <= set(out["clusters"][0])
    assert set(out["crowding"]) >= {"long", "short", "components"}
    assert out["crowding"]["long"] > 0.5 > out["crowding"]["short"]
    assert out["oi_units"] == "base"
    longs = [c for c in out["clusters"] if c["side"] == "long"]
    assert all(c["price"] < out["mark"] for c in longs)


def test_heatmap_says_how_much_history_it_holds(cli, synth_dir):
    """On 3 hours of bars the snapshot printed clusters and a crowding score as if complete:
    the map misses positions opened before the data, and the rules read crowding only after
    its 24h warm-up. Both are said; from 24h on nothing is added."""
    r = cli("heatmap", synth_dir, "--at", "2026-01-01T03:00Z")
    assert r.code == 0, r.err
    assert "note: the map holds 3.0 h of bars (half-life 24 h)" in r.out
    assert "crowding: - (warming up: the rules read it after 24 h of bars, 3.0 h so far)" in r.out
    out = json.loads(cli("heatmap", synth_dir, "--at", "2026-01-01T03:00Z", "--json").out)
    assert out["crowding"]["long"] is None and out["crowding"]["short"] is None
    assert out["history_hours"] == 3.0 and out["half_life_hours"] == 24   # bars closed by 03:00
    r = cli("heatmap", synth_dir, "--at", "2026-01-02T00:00Z")     # 1,440 bars: 24 h
    assert "note:" not in r.out and "crowding: long" in r.out


def test_heatmap_table_and_png(cli, synth_dir, tmp_path):
    png = tmp_path / "h.png"
    r = cli("heatmap", synth_dir, "--png", png)
    assert r.code == 0, r.err
    assert "long liquidation clusters" in r.out and "crowding: long" in r.out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_heatmap_bad_inputs(cli, synth_dir, tmp_path):
    r = cli("heatmap", synth_dir, "--at", "yesterday")
    assert r.code == 2 and "--at: expected a UTC time" in r.err
    r = cli("heatmap", synth_dir, "--at", "2020-01-01")
    assert r.code == 2 and "outside the dataset" in r.err
    r = cli("heatmap", tmp_path / "nope")
    assert r.code == 2 and "not a dataset directory" in r.err
    r = cli("heatmap", "validate", "--seeds", "a..b")
    assert r.code == 2 and "--seeds: expected a range like 1..5" in r.err
    # 1..100000 ran for a day; 1,1 counted seed 1 twice in the mean
    r = cli("heatmap", "validate", "--seeds", "1..100000")
    assert r.code == 2 and "'1..100000' is 100,000 seeds; at most 1,000" in r.err, r.err
    r = cli("heatmap", "validate", "--seeds", "3,1,3")
    assert r.code == 2 and "--seeds: seed 3 is listed twice" in r.err, r.err


def test_validate_json(cli):
    r = cli("heatmap", "validate", "--seeds", "1,2", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert [s["seed"] for s in out["seeds"]] == [1, 2]
    assert {"seed", "capture_top10", "precision_top10", "spearman"} <= set(out["seeds"][0])
    assert out["mean_capture_top10"] == pytest.approx(
        sum(s["capture_top10"] for s in out["seeds"]) / 2)
    assert out["mean_capture_top10"] > 0.5


def test_timeline_csv(cli, synth_dir, tmp_path):
    import csv

    import numpy as np

    from bot.data import dataset
    from bot.mechanics.brackets import shipped
    from bot.signals import heatmap as hm
    out = tmp_path / "t.csv"
    r = cli("heatmap", synth_dir, "--timeline", out)
    assert r.code == 0, r.err
    rows = list(csv.DictReader(out.open()))
    bars = dataset.load(synth_dir).bars
    assert len(rows) == len(bars)
    assert list(rows[0]) == ["ts", "close", "long_mass_1pct", "long_mass_3pct",
                             "long_mass_5pct", "short_mass_1pct", "short_mass_3pct",
                             "short_mass_5pct", "est_long_liq", "est_short_liq", "crowd_long",
                             "crowd_short", "cascade", "confidence"]
    assert int(rows[5]["ts"]) == int(bars.ts[5]) and rows[0]["ts"] == "1767225600000"
    assert rows[0]["est_long_liq"] == ""                 # no map before the first bar
    tl = hm.timeline(bars, shipped("binance", "BTCUSDT"))
    t = 2000
    assert float(rows[t]["est_long_liq"]) == float(f"{tl['est_long'][t]:.10g}")
    assert float(rows[t]["long_mass_3pct"]) == float(f"{tl['long_mass_3pct'][t]:.10g}")
    m1, m3, m5 = (float(rows[t][f"long_mass_{x}pct"]) for x in (1, 3, 5))
    assert 0 <= m1 <= m3 <= m5 and m5 > 0
    assert {row["cascade"] for row in rows} <= {"-1", "0", "1"}
    assert any(row["cascade"] == "1" for row in rows)    # the synthetic long cascade fires
    assert max(float(row["crowd_long"]) for row in rows if row["crowd_long"]) > 0.5
    # crowding as the rules read it: empty for the first 24 hours (1m bars: 1,439 rows)
    assert {rows[i][c] for i in range(1439) for c in ("crowd_long", "crowd_short")} == {""}
    assert rows[1439]["crowd_long"] != "" and rows[1439]["crowd_short"] != ""
    assert np.isclose(float(rows[-1]["confidence"]), 1.0)


def test_timeline_calibrated_4h_uses_the_calibrated_map(cli, synth_dir, tmp_path):
    import csv

    from bot.data import dataset
    from bot.mechanics.brackets import shipped
    from bot.signals import heatmap as hm
    out = tmp_path / "t.csv"
    r = cli("heatmap", synth_dir, "--timeline", out, "--calibrated-4h")
    assert r.code == 0, r.err
    rows = list(csv.DictReader(out.open()))
    bars = dataset.load(synth_dir).bars
    # 540 4h bars = 2,160 hours of half-life, in this dataset's 1m bars
    p = hm.params_for_interval(bars.interval_ms, hm.CALIBRATED_4H, half_life_hours=2160.0)
    assert p.half_life_bars == 129_600.0 and p.near_frac == hm.CALIBRATED_4H.near_frac
    tl = hm.timeline(bars, shipped("binance", "BTCUSDT"), p, hm.CALIBRATED_4H_LEVERAGES,
                     hm.CALIBRATED_4H_WEIGHTS)
    default = hm.timeline(bars, shipped("binance", "BTCUSDT"))
    t = 2000
    assert float(rows[t]["est_long_liq"]) == float(f"{tl['est_long'][t]:.10g}")
    assert float(rows[t]["short_mass_3pct"]) == float(f"{tl['short_mass_3pct'][t]:.10g}")
    assert tl["est_long"][t] != default["est_long"][t]


def test_timeline_bad_output(cli, synth_dir, tmp_path):
    r = cli("heatmap", synth_dir, "--timeline", tmp_path / "nope" / "t.csv")
    assert r.code == 2 and "--timeline" in r.err and "does not exist" in r.err
    r = cli("heatmap", synth_dir, "--timeline", tmp_path)
    assert r.code == 2 and "--timeline" in r.err and "is a directory" in r.err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os
        if not os.access(ro, os.W_OK):           # root writes anywhere: nothing to check
            r = cli("heatmap", synth_dir, "--timeline", ro / "t.csv")
            assert r.code == 2 and "--timeline" in r.err and "not writable" in r.err
    finally:
        ro.chmod(0o700)
    # checked before any work: a bad path fails even when the dataset is missing too
    r = cli("heatmap", tmp_path / "missing", "--timeline", tmp_path)
    assert r.code == 2 and "--timeline" in r.err


def test_timeline_map_choice(cli, synth_dir, tmp_path):
    """`--map auto` (the default) runs the calibrated map on 4h bars and the 1m defaults on
    1m bars; `--map` names either; a bad or contradictory choice exits 2."""
    import csv

    from bot.data import dataset
    from bot.data.resample import resample
    from bot.mechanics.brackets import shipped
    from bot.signals import heatmap as hm
    h4 = tmp_path / "h4"
    bars4 = resample(dataset.load(synth_dir).bars, 4 * 3_600_000)
    dataset.save(dataset.Dataset(bars4), h4)
    bars4 = dataset.load(h4).bars
    br = shipped("binance", "BTCUSDT")
    cal = hm.timeline(bars4, br, hm.params_for_interval(
        bars4.interval_ms, hm.CALIBRATED_4H, half_life_hours=2160.0),
        hm.CALIBRATED_4H_LEVERAGES, hm.CALIBRATED_4H_WEIGHTS)
    default = hm.timeline(bars4, br, hm.params_for_interval(bars4.interval_ms))
    t = len(bars4) - 1
    assert cal["est_long"][t] != default["est_long"][t]
    for args, ref, used in (((), cal, "calibrated-4h, auto"), (("--map", "default"), default,
                                                               "default"),
                            (("--calibrated-4h",), cal, "calibrated-4h")):
        out = tmp_path / "t.csv"
        r = cli("heatmap", h4, "--timeline", out, *args)
        assert r.code == 0, r.err
        assert f"(map: {used})" in r.err
        rows = list(csv.DictReader(out.open()))
        assert float(rows[t]["est_long_liq"]) == float(f"{ref['est_long'][t]:.10g}")
    r = cli("heatmap", synth_dir, "--timeline", tmp_path / "m.csv")        # 1m: the defaults
    assert r.code == 0 and "(map: default, auto)" in r.err
    r = cli("heatmap", h4, "--timeline", tmp_path / "x.csv", "--map", "best")
    assert r.code == 2 and "--map: expected one of auto, default, calibrated-4h" in r.err
    r = cli("heatmap", h4, "--timeline", tmp_path / "x.csv", "--map", "default",
            "--calibrated-4h")
    assert r.code == 2 and "--calibrated-4h contradicts --map default" in r.err
    for flag in (["--map", "calibrated-4h"], ["--calibrated-4h"]):    # no --timeline: no map
        r = cli("heatmap", h4, *flag)
        assert r.code == 2 and "choose the map of --timeline" in r.err


def test_snapshot_mark_falls_back_to_the_last_trade(cli, synth_dir, tmp_path):
    import numpy as np

    from bot.data import dataset
    bars = dataset.load(synth_dir).bars
    mark = bars["mark_close"].copy()
    mark[-1] = np.nan                                   # a hole in the mark feed
    d = tmp_path / "holed"
    dataset.save(dataset.Dataset(bars.with_columns(mark_close=mark)), d)
    r = cli("heatmap", d, "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["mark"] == float(bars.close[-1]) and out["clusters"]


def dataset_iso(ms: int) -> str:
    """`bot.data.dataset.iso`, imported late as this module's other helpers do."""
    from bot.data.dataset import iso
    return iso(ms)


def _h4(synth_dir, d):
    """The synthetic 1m dataset resampled to 4h bars (18 bars, 72 hours), saved in `d`."""
    from bot.data import dataset
    from bot.data.resample import resample
    dataset.save(dataset.Dataset(resample(dataset.load(synth_dir).bars, 4 * 3_600_000)), d)
    return dataset.load(d).bars


def test_at_sees_only_the_bars_closed_by_then(cli, synth_dir, tmp_path):
    """`--at T` read every bar OPENING at or before T, so the bar still running at T was in:
    on 4h vendor data `--at 2025-10-10T21:00Z` printed 'at 2025-10-10T20:00Z, mark 112,714.90',
    the mark of 00:00 after the crash. Now the bars closed by T; `at` is the last one's close
    (the time its mark is the price of), and the dataset's end is a valid --at."""
    from bot.data import dataset
    from bot.data.dataset import iso
    from bot.signals import stream
    h4 = _h4(synth_dir, tmp_path / "h4")
    mark4 = stream.bar_column(h4, stream.X_MARK_CLOSE)
    i = int(np.searchsorted(h4.ts, h4.ts[0] + 40 * 3_600_000))   # the bar opening 40 h in
    for at in (iso(int(h4.ts[i])), iso(int(h4.ts[i]) + 3_600_000)):     # on it, 1 h into it
        r = cli("heatmap", tmp_path / "h4", "--at", at, "--json")
        assert r.code == 0, r.err
        out = json.loads(r.out)
        assert out["at"] == iso(int(h4.ts[i])) and out["mark"] == float(mark4[i - 1])
        assert out["history_hours"] == 40.0
    bars = dataset.load(synth_dir).bars
    mark = stream.bar_column(bars, stream.X_MARK_CLOSE)
    out = json.loads(cli("heatmap", synth_dir, "--at", "2026-01-03T12:00:30Z", "--json").out)
    j = int(np.searchsorted(bars.ts, bars.ts[0] + 60 * 3_600_000))  # 2026-01-03T12:00Z
    assert out["at"] == "2026-01-03T12:00:00Z" and out["mark"] == float(mark[j - 1])
    r = cli("heatmap", synth_dir, "--at", iso(bars.end_ms), "--json")  # the last close
    assert r.code == 0, r.err
    assert json.loads(r.out) == json.loads(cli("heatmap", synth_dir, "--json").out)
    r = cli("heatmap", synth_dir, "--at", iso(bars.end_ms + 60_000))
    assert r.code == 2 and "outside the dataset" in r.err
    r = cli("heatmap", synth_dir, "--at", iso(int(bars.ts[1])))        # one bar closed
    assert r.code == 2 and "1 bar(s) up to that time" in r.err


def test_snapshot_says_map_units_and_oi_source(cli, synth_dir, tmp_path):
    """The snapshot did not say which map ran nor the unit of its notionals, and its JSON
    said `oi_units: "base"` for a dataset with no open interest at all (volume proxy)."""
    from bot.data import dataset
    bars = dataset.load(synth_dir).bars
    out = json.loads(cli("heatmap", synth_dir, "--json").out)
    assert out["map"] == "default" and out["notional_units"] == "quote"
    assert out["oi_units"] == "base"
    r = cli("heatmap", synth_dir)
    assert "map: default" in r.out and "notionals in quote" in r.out
    cols = {k: bars[k] for k in bars.names if not k.startswith("open_interest")}
    d = tmp_path / "no_oi"
    dataset.save(dataset.Dataset(type(bars)(bars.symbol, bars.interval_ms, cols)), d)
    out = json.loads(cli("heatmap", d, "--json").out)
    assert out["oi_units"] == "none" and out["confidence"] < 1
    cols["oi_stablecoin"] = bars["open_interest"]
    d = tmp_path / "stable"
    dataset.save(dataset.Dataset(type(bars)(bars.symbol, bars.interval_ms, cols)), d)
    out = json.loads(cli("heatmap", d, "--json").out)
    assert out["oi_units"] == "relative" and out["notional_units"] == "relative"
    r = cli("heatmap", d, "--timeline", tmp_path / "t.csv")
    assert r.code == 0 and "relative, not USD" in r.err, r.err
    r = cli("heatmap", synth_dir, "--timeline", tmp_path / "t.csv")
    assert r.code == 0 and "in quote notional" in r.err, r.err


def test_warm_up_is_said_in_hours_of_this_datasets_bars(cli, synth_dir, tmp_path):
    """The crowding warm-up is 24 hours of data on any bar: 6 bars of 4h. It counted 24 BARS
    on bars longer than an hour (96 h on 4h bars), so a 72 h 4h dataset showed no crowding."""
    bars = _h4(synth_dir, tmp_path / "h4")
    out = json.loads(cli("heatmap", tmp_path / "h4", "--json").out)
    assert out["crowding"]["warm_up_hours"] == 24 and out["crowding"]["long"] is not None
    end = dataset_iso(int(bars.ts[4]) + bars.interval_ms)       # 5 bars closed: 20 h
    r = cli("heatmap", tmp_path / "h4", "--at", end)
    assert "the rules read it after 24 h of bars, 20.0 h so far" in r.out, r.out
    end = dataset_iso(int(bars.ts[5]) + bars.interval_ms)       # 6 bars: warm
    out = json.loads(cli("heatmap", tmp_path / "h4", "--at", end, "--json").out)
    assert out["crowding"]["long"] is not None
    out = json.loads(cli("heatmap", synth_dir, "--json").out)
    assert out["crowding"]["warm_up_hours"] == 24


def test_an_empty_map_says_why_its_cluster_tables_are_empty(cli, tmp_path):
    """With open interest joined the map places positions where open interest rose; on
    2025-10-10 at 20:00, with the vendor series joined, open interest stood below its level
    at the dataset's start, the map was empty and both tables showed a row of '-' without
    a word. The same here on a synthetic day whose open interest only falls."""
    from bot.data import dataset
    from bot.data.bars import Bars
    from bot.data.synthetic import SynthSpec, generate

    bars = generate(SynthSpec(seed=1, days=1)).bars
    cols = dict(bars.columns)
    cols["open_interest"] = np.linspace(2_000.0, 1_500.0, len(bars))
    dataset.save(dataset.Dataset(Bars(bars.symbol, bars.interval_ms, cols)), tmp_path / "d")
    r = cli("heatmap", tmp_path / "d")
    assert r.code == 0, r.err
    out = " ".join(r.out.split())
    for side in ("long", "short"):
        assert (f"no {side} cluster: the map is empty. It holds the positions opened inside "
                "the dataset, placed where open interest rose; open interest is now 1,500, at "
                "or below the 2,000 of the dataset's first bar, so every position it placed "
                "has been closed") in out
    got = json.loads(cli("heatmap", tmp_path / "d", "--json").out)
    assert got["side_totals"] == {"long": 0.0, "short": 0.0} and got["clusters"] == []
    assert got["open_interest"] == {"first": 2000.0, "now": 1500.0}
