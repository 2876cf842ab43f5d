"""Small wording helpers shared by the CLI and the runtime's messages."""

from __future__ import annotations


def count(n: int, noun: str) -> str:
    """'1 order', '2 orders', '1,234 bars': `n` with `noun`, plural unless n is 1."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def amount(x: float) -> str:
    """A notional in a few characters: '850', '12.3k', '4.6M', '1.2B' (one decimal from a
    thousand on), so an alt's 40k cluster does not read '0.0M'."""
    a = abs(x)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if a >= size * 0.9995:            # 999.95k rounds to 1.0M, not 1000.0k
            return f"{x / size:,.1f}{unit}"
    return f"{x:,.0f}"
