"""Small wording helpers shared by the CLI and the runtime's messages."""

from __future__ import annotations


def count(n: int, noun: str) -> str:
    """'1 order', '2 orders', '1,234 bars': `n` with `noun`, plural unless n is 1."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
