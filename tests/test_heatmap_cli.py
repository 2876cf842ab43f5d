import json

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
    longs = [c for c in out["clusters"] if c["side"] == "long"]
    assert all(c["price"] < out["mark"] for c in longs)


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


def test_validate_json(cli):
    r = cli("heatmap", "validate", "--seeds", "1,2", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert [s["seed"] for s in out["seeds"]] == [1, 2]
    assert {"seed", "capture_top10", "precision_top10", "spearman"} <= set(out["seeds"][0])
    assert out["mean_capture_top10"] == pytest.approx(
        sum(s["capture_top10"] for s in out["seeds"]) / 2)
    assert out["mean_capture_top10"] > 0.5
