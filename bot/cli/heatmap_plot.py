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
    t = (bars.ts[::stride][: img.shape[1]] - bars.ts[0]) / 3_600_000.0
    fig, ax = plt.subplots(figsize=(12, 6), dpi=110)
    vmax = img.max() if img.max() > 0 else 1.0
    cmap = plt.get_cmap("inferno")
    ax.set_facecolor(cmap(0.0))
    ax.pcolormesh(t, edges[:-1], np.where(img >= vmax * 1e-3, img, np.nan), cmap=cmap,
                  shading="auto", norm=LogNorm(vmin=vmax * 1e-3, vmax=vmax))
    ax.plot((bars.ts - bars.ts[0]) / 3_600_000.0, bars.close, color="#3fc1ff", lw=0.8,
            label="close")
    for c in snap["clusters"][:20]:
        color = "#ff4d4d" if c["side"] == "long" else "#4dff88"
        ax.plot([t[-1]], [c["price"]], marker="<", color=color, ms=6)
    ax.set_yscale("log")
    ax.set_xlabel(f"hours since {iso(int(bars.ts[0]))}")
    ax.set_ylabel("price")
    ax.set_title(f"{bars.symbol} estimated liquidation levels (red: long, green: short "
                 f"clusters at {snap['at']})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
