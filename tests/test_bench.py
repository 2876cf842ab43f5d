"""`make bench` verdicts: a tolerance band around each target and around an earlier run,
in the figure's direction (times and memory: lower is better; bars/s and ratios: higher)."""

from benchmarks.run import regressed, verdict


def test_verdict_for_throughputs_and_ratios():
    assert verdict(1.6, 1.5, higher=True) == "yes"
    assert verdict(1.3, 1.5, higher=True) == "~"         # 13% short of 1.5x: noise band
    assert verdict(1.1, 1.5, higher=True) == "NO"        # 1.5 / 1.25 = 1.2 is the edge
    assert verdict(2_100_000.0, 2_000_000.0, higher=True) == "yes"


def test_regression_against_an_earlier_run_needs_more_than_noise():
    assert not regressed(0.0502, 0.050)                 # 50.2 ms after 50.0 ms: noise
    assert regressed(0.070, 0.050)                      # 40% slower
    assert not regressed(3.0e6, 3.3e6, higher=True)     # 10% fewer bars/s: noise
    assert regressed(2.0e6, 3.3e6, higher=True)         # 39% fewer
    assert not regressed(5.0, 0.0)                      # no earlier figure: nothing to say
