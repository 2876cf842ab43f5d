"""What `liqbot data info` shows: span, rows, columns, gaps and the largest moves."""

from __future__ import annotations

from typing import Any

import numpy as np

from bot.data.dataset import Dataset, iso


def summarize(ds: Dataset) -> dict[str, Any]:
    """A JSON-ready summary of a dataset (manifest plus measured moves)."""
    b = ds.bars
    man = ds.manifest()
    out: dict[str, Any] = {k: man[k] for k in ("exchange", "symbol", "timeframe", "span",
                                                "rows", "columns", "gaps", "filled_bars")}
    if len(b) == 0:
        return out
    o, h, lo, c = b["open"], b["high"], b["low"], b.close
    down = lo / o - 1.0
    up = h / o - 1.0
    i_dn, i_up = int(np.argmin(down)), int(np.argmax(up))
    peak = np.maximum.accumulate(h)
    dd = lo / peak - 1.0
    i_dd = int(np.argmin(dd))
    i_pk = int(np.argmax(h[: i_dd + 1]))
    out["moves"] = {
        "worst_bar": {"ts": iso(int(b.ts[i_dn])), "low_over_open": float(down[i_dn])},
        "best_bar": {"ts": iso(int(b.ts[i_up])), "high_over_open": float(up[i_up])},
        "max_drawdown": {"from": iso(int(b.ts[i_pk])), "to": iso(int(b.ts[i_dd])),
                         "high": float(h[i_pk]), "low": float(lo[i_dd]),
                         "fraction": float(dd[i_dd])},
        "first_close": float(c[0]), "last_close": float(c[-1]),
    }
    if b.has("liq_long_notional"):
        out["liquidations_quote"] = {"long": float(np.nansum(b["liq_long_notional"])),
                                     "short": float(np.nansum(b["liq_short_notional"]))}
    if ds.meta:
        out["meta"] = {k: v for k, v in ds.meta.items() if k != "generator"} or None
        if "generator" in ds.meta:
            g = ds.meta["generator"]
            out["generator"] = {k: g[k] for k in ("model", "seed", "days", "crowding", "shock")
                                if k in g}
    return out


def one_line_moves(summary: dict[str, Any]) -> str:
    """'worst 1m bar -6.15% (low / open) at ...; best ...; max drawdown -16.9% (...)'."""
    m = summary.get("moves")
    if not m:
        return "no bars"
    tf = summary["timeframe"]
    w, bb, dd = m["worst_bar"], m["best_bar"], m["max_drawdown"]
    return (f"worst {tf} bar {w['low_over_open']:+.2%} (low / open) at {w['ts']}; best {tf} "
            f"bar {bb['high_over_open']:+.2%} (high / open) at {bb['ts']}; max drawdown "
            f"{dd['fraction']:+.2%} "
            f"({dd['high']:,.2f} at {dd['from']} -> {dd['low']:,.2f} at {dd['to']})")
