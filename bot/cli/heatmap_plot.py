"""The `--png` of `liqbot heatmap`: a time x price liquidation heatmap (Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bot.data.dataset import iso
from bot.errors import LiqbotError
from bot.mechanics.brackets import Brackets
from bot.signals import heatmap as hm


def draw(bars: Any, brackets: Brackets, snap: dict[str, Any], path: Path,
         columns: int = 240) -> None:
    """Heat of liquidation notional (both sides) over time and price, the close line, and
    the clusters at the snapshot time as markers."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import LogNorm
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator
    except ImportError:
        raise LiqbotError("--png needs matplotlib: pip install 'liqbot[plot]'") from None
    n = len(bars)
    stride = max(1, n // columns)
    run = hm.run(bars, brackets, stride=stride)
    nb = run.mass.shape[1]
    lo_p = float(bars["low"].min()) * 0.9
    hi_p = float(bars["high"].max()) * 1.1
    width = float(run.meta[hm.M_WIDTH])
    rows = max(50, int(np.log(hi_p / lo_p) / (2 * width)))   # >= 2 grid bins per row
    edges = np.exp(np.linspace(np.log(lo_p), np.log(hi_p), rows + 1))
    img = np.zeros((rows, len(run.snapshots)))
    for k, (m, lo) in enumerate(zip(run.snapshots, run.snapshot_lo, strict=True)):
        centers = np.exp(lo + (np.arange(nb) + 0.5) * width)
        dens = m[0] + m[1]
        idx = np.searchsorted(edges, centers) - 1
        ok = (idx >= 0) & (idx < rows)
        np.add.at(img[:, k], idx[ok], dens[ok])
    span_h = (bars.end_ms - bars.ts[0]) / 3_600_000.0
    per, unit = (24.0, "days") if span_h > 72 else (1.0, "hours")   # a readable time axis
    t = (bars.ts[::stride][: img.shape[1]] - bars.ts[0]) / 3_600_000.0 / per
    fig, ax = plt.subplots(figsize=(12, 6), dpi=110)
    vmax = img.max() if img.max() > 0 else 1.0
    cmap = plt.get_cmap("inferno")
    ax.set_facecolor(cmap(0.0))
    mesh = ax.pcolormesh(t, edges[:-1], np.where(img >= vmax * 1e-3, img, np.nan), cmap=cmap,
                         shading="auto", norm=LogNorm(vmin=vmax * 1e-3, vmax=vmax))
    money = "quote" if snap.get("notional_units", "quote") == "quote" else "relative units"
    fig.colorbar(mesh, ax=ax, pad=0.01,
                 label=f"estimated liquidation notional per price row ({money})")
    ax.plot((bars.ts - bars.ts[0]) / 3_600_000.0 / per, bars.close, color="#3fc1ff", lw=0.8)
    ax.axhline(snap["mark"], color="white", lw=0.7, ls="--")
    for c in snap["clusters"][:20]:
        color = "#ff4d4d" if c["side"] == "long" else "#4dff88"
        ax.plot([t[-1]], [c["price"]], marker="<", color=color, ms=6)
    ax.set_yscale("log")
    price = FuncFormatter(lambda v, _: f"{v:,.{max(0, 3 - int(np.floor(np.log10(v))))}f}"
                          if v > 0 else "")
    # plain prices at round values (a log axis over a narrow range labels one or two)
    ax.yaxis.set_major_locator(MaxNLocator(10))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(price)
    ax.set_xlabel(f"{unit} since {iso(int(bars.ts[0]))}")
    ax.set_ylabel(f"price ({bars.symbol}, quote per base)")
    ax.set_title(f"{bars.symbol}: estimated liquidation levels over time; clusters at "
                 f"{snap['at']}")
    ax.legend(handles=[
        Line2D([], [], color="#3fc1ff", lw=0.8, label="close"),
        Line2D([], [], color="white", lw=0.7, ls="--", label=f"mark {snap['mark']:,.2f}"),
        Line2D([], [], color="#ff4d4d", marker="<", ls="", label="long liquidation cluster"),
        Line2D([], [], color="#4dff88", marker="<", ls="", label="short liquidation cluster")],
        loc="upper left", fontsize=8, framealpha=0.6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
