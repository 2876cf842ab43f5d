"""Wording helpers (bot/text.py)."""

from __future__ import annotations

from bot.text import amount, count


def test_count_is_plural_unless_one():
    assert [count(n, "bar") for n in (0, 1, 2, 1234)] == ["0 bars", "1 bar", "2 bars",
                                                         "1,234 bars"]


def test_amount_keeps_an_alts_cluster_readable():
    """The heatmap's notional column printed '0.0M' for every cluster of a 7-dollar coin
    (43,900 quote read as 0.0M)."""
    assert [amount(x) for x in (0, 850, 999.4, 999.6, 43_900, 999_960, 4.6e6, 1.23e9,
                                -2.5e6)] == \
        ["0", "850", "999", "1.0k", "43.9k", "1.0M", "4.6M", "1.2B", "-2.5M"]
