"""`liqbot sweep`: a strategy's parameter grid (or Optuna trials) over datasets, on every
core or a Ray cluster, optionally walk-forward; results in OUT/ (docs/sweeps.md).

Only light imports at module level: `liqbot --help` must not load numba or pyarrow.
"""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from bot import interrupts
from bot.cli.tiers import TiersOption, brackets_for
from bot.errors import LiqbotError

TABLE = [("Sharpe", "sharpe", "{:.2f}"), ("return", "total_return", "{:+.2%}"),
         ("max DD", "max_drawdown", "{:.2%}"), ("liq", "liquidations", "{:g}"),
         ("trades", "n_trades", "{:,.1f}")]    # a mean over datasets: 75.7, not 75.6667


def _fmt(fmt: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    text = fmt.format(value)
    return text[:-2] if fmt.endswith(".1f}") and text.endswith(".0") else text   # 27, not 27.0


def _params_text(row: dict[str, Any], keys: list[str]) -> str:
    return " ".join(f"{k}={row[f'p_{k}']}" for k in keys)


def ranked(result: Any, objective: str) -> list[dict[str, Any]]:
    """Parameter sets of a sweep without walk-forward, best first: metrics averaged over
    the datasets (ties keep sampling order)."""
    from backtests.sweep import score

    by: dict[str, list[dict[str, Any]]] = {}
    for r in result.rows:
        by.setdefault(_params_text(r, result.param_keys), []).append(r)
    out = []
    for text, rows in by.items():
        agg: dict[str, Any] = {"params": text, "chosen": rows[0]["chosen"]}
        for _, key, _ in TABLE + [(objective, objective, "")]:
            vals = [float(r[key]) for r in rows if r.get(key) is not None]
            agg[key] = sum(vals) / len(vals) if len(vals) == len(rows) else None
        agg["score"] = score(agg, objective)
        out.append(agg)
    return sorted(out, key=lambda a: -a["score"])


def window_days(row: dict[str, Any]) -> float:
    """Days of bars a result row was scored on (its first to last bar, plus one bar)."""
    from datetime import datetime

    a, b = (datetime.fromisoformat(row[k]).timestamp() for k in ("start", "end"))
    n = int(row["bars"])
    return (b - a) * n / max(n - 1, 1) / 86_400.0


def print_tables(result: Any, objective: str, top: int, con: Any) -> None:
    from rich.table import Table

    if not result.concatenated:
        t = Table(title=f"parameter sets by {objective} (mean over datasets)")
        t.add_column("#", justify="right")
        t.add_column("parameters")
        for label, _, _ in TABLE:
            t.add_column(label, justify="right")
        for i, a in enumerate(ranked(result, objective)[:top], 1):
            t.add_row(str(i), a["params"], *(_fmt(f, a[k]) for _, k, f in TABLE))
        con.print(t)
        return
    t = Table(title=f"walk-forward: best on train by {objective}, reported on test")
    for c in ("dataset", "win", "test from", "chosen", f"IS {objective}", f"OOS {objective}",
              "OOS return", "OOS max DD"):
        t.add_column(c, justify="right" if c.startswith(("IS", "OOS", "win")) else "left")
    rows = result.rows
    for r in (r for r in rows if r["segment"] == "test"):
        tr = next(x for x in rows if x["segment"] == "train" and x["chosen"]
                  and x["dataset"] == r["dataset"] and x["window"] == r["window"])
        t.add_row(r["dataset"], str(r["window"]), r["start"][:16].replace("T", " "),
                  _params_text(r, result.param_keys), _fmt("{:.3f}", tr[objective]),
                  _fmt("{:.3f}", r[objective]), _fmt("{:+.2%}", r["total_return"]),
                  _fmt("{:.2%}", r["max_drawdown"]))
    con.print(t)
    c = Table(title="concatenated out-of-sample (test windows chained)")
    for col in ("dataset", "windows", "bars", "return", "max DD", "Sharpe", "Sortino", "liq", "trades"):
        c.add_column(col, justify="left" if col == "dataset" else "right")
    for d, m in result.concatenated.items():
        c.add_row(d, str(m["windows"]), f"{m['bars']:,}", _fmt("{:+.2%}", m["total_return"]),
                  _fmt("{:.2%}", m["max_drawdown"]), _fmt("{:.2f}", m["sharpe"]),
                  _fmt("{:.2f}", m["sortino"]), str(m["liquidations"]), str(m["n_trades"]))
    con.print(c)


def heatmap_png(result: Any, objective: str, path: Path, trials: bool) -> str:
    """OUT/heatmap.png of the objective over the first two grid parameters (mean over the
    other parameters, datasets and windows; train rows under walk-forward); with --trials a
    scatter of the sampled points. Returns a one-line note."""
    keys = result.param_keys
    if len(keys) < 2:
        return "heatmap: skipped (needs two --grid parameters)"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "heatmap: skipped (matplotlib is not installed; pip install 'liqbot[plot]')"
    import numpy as np

    a, b = keys[:2]
    pts: dict[tuple[Any, Any], list[float]] = {}
    for r in result.rows:
        v = r.get(objective)
        if r["segment"] != "test" and v is not None and math.isfinite(float(v)):
            pts.setdefault((r[f"p_{a}"], r[f"p_{b}"]), []).append(float(v))
    if not pts:
        return f"heatmap: skipped (no finite {objective})"
    fig, ax = plt.subplots(figsize=(7, 5.5))
    if trials:
        xs, ys = zip(*pts, strict=True)
        sc = ax.scatter(xs, ys, c=[float(np.mean(v)) for v in pts.values()], cmap="viridis", s=60)
        fig.colorbar(sc, ax=ax, label=objective)
    else:
        xa = sorted({k[0] for k in pts}, key=lambda x: (str(type(x)), x))
        yb = sorted({k[1] for k in pts}, key=lambda x: (str(type(x)), x))
        z = np.full((len(yb), len(xa)), np.nan)
        for (x, y), v in pts.items():
            z[yb.index(y), xa.index(x)] = float(np.mean(v))
        im = ax.imshow(z, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(xa)), [str(x) for x in xa])
        ax.set_yticks(range(len(yb)), [str(y) for y in yb])
        for i in range(len(yb)):
            for j in range(len(xa)):
                if np.isfinite(z[i, j]):   # dark text on the light (high) half of viridis
                    light = z[i, j] > np.nanmean([np.nanmin(z), np.nanmax(z)])
                    ax.text(j, i, f"{z[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="k" if light else "w")
        fig.colorbar(im, ax=ax, label=objective)
    ax.set_xlabel(a)
    ax.set_ylabel(b)
    ax.set_title(f"{objective} by {a} x {b}")
    fig.tight_layout()
    tmp = path.with_suffix(".png.tmp")      # a Ctrl-C mid-write leaves no half PNG
    try:
        fig.savefig(tmp, dpi=100, format="png")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    os.replace(tmp, path)
    return f"heatmap: {path}"


def sweep_command(
    ctx: typer.Context,
    datasets: Annotated[list[str], typer.Argument(
        help="dataset directories or scenarios (cascade-long, calm, synthetic:SEED[:CROWDING[:DAYS]])",
        metavar="DATASET")],
    strategy: Annotated[str, typer.Option("--strategy", help="hold, trend, cascade_fade, "
                                                             "funding_skew, sma_cross or module:Class")],
    grid: Annotated[list[str], typer.Option(
        "--grid", help="KEY=V1,V2,... or KEY=START:STOP:STEP (repeatable; values within the "
        "strategy's declared ranges)")],
    trials: Annotated[int | None, typer.Option(
        "--trials", help="sample N parameter sets with Optuna (TPE, --seed) from the grid's "
        "ranges instead of running the full grid")] = None,
    walk_forward: Annotated[str | None, typer.Option(
        "--walk-forward", help="TRAIN:TEST rolling windows, bar counts or durations (2d:1d)")] = None,
    objective: Annotated[str, typer.Option(
        "--objective", help="sharpe | sortino | total_return | final_equity | max_drawdown | "
        "liquidations")] = "sharpe",
    ray: Annotated[str | None, typer.Option(
        "--ray", help="run on a Ray cluster: ADDRESS, auto, or local (a private one here)")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="local worker processes (default: every core)")] = None,
    preset: Annotated[str, typer.Option("--preset", help="conservative | balanced | "
                                                         "aggressive | FILE.toml")] = "balanced",
    risk: Annotated[str, typer.Option("--risk", help="on | off")] = "on",
    wallet: Annotated[float, typer.Option("--wallet", help="initial equity (quote)")] = 100_000.0,
    seed: Annotated[int, typer.Option("--seed", help="Optuna sampler seed")] = 0,
    top: Annotated[int, typer.Option("--top", help="rows of the ranked table")] = 20,
    out: Annotated[Path, typer.Option("--out", help="results directory (rerun to resume)")]
    = Path("sweep-out"),
    tiers: TiersOption = None,
) -> None:
    """Sweep a strategy's parameters over datasets: every combination of --grid (or --trials
    sampled by Optuna), ranked by --objective; with --walk-forward, best on each train
    window and reported on the next test window. Writes OUT/results.parquet and
    OUT/heatmap.png; a rerun with the same --out skips finished parameter sets."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from backtests import sweep as sw
    from bot.cli.backtest import _fees
    from bot.cli.paths import check_output_dir, check_wallet, console, shown

    check_wallet(wallet)
    if workers is not None and not 1 <= workers <= 1024:
        raise LiqbotError(f"--workers: expected 1..1024, got {workers}")
    if workers is not None and ray is not None:
        raise LiqbotError("--workers: sets the local process pool; with --ray the cluster's CPUs are used")
    if top < 1:
        raise LiqbotError(f"--top: expected >= 1, got {top}")
    check_output_dir(out, "--out")
    fees, cfg = _fees((ctx.obj or {}).get("config") if ctx.obj else None)
    from bot.data.dataset import interval_of, symbol_of
    from bot.signals.stream import bar_length_note
    notes: list[str] = []
    for d in dict.fromkeys(datasets):     # a symbol without a table announced, a --tiers
        if Path(d).is_dir():              # file without it refused, before any work
            brackets_for(symbol_of(Path(d)), tiers, leverage=cfg.live.leverage, clamp=True)
            # the rules were measured on 1m bars: said as `backtest` says it
            note = bar_length_note(interval_of(Path(d))) if risk != "off" else None
            if note is not None and note not in notes:
                notes.append(note)
    spec = sw.SweepSpec(datasets=list(datasets), strategy=strategy, grid=list(grid), risk=risk,
                        preset=preset, wallet=wallet, fees=fees, fills=cfg.fills, trials=trials,
                        walk_forward=walk_forward, objective=objective, seed=seed, tiers=tiers,
                        leverage=cfg.live.leverage)
    if trials is not None:
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise LiqbotError("--trials: Optuna is not installed; pip install 'liqbot[optuna]'") from None
    backend: Any = sw.RayBackend(ray) if ray is not None else sw.LocalBackend(workers)
    err = Console(stderr=True)

    try:
        # SIGTERM ends the sweep as Ctrl-C does, raised at a safe point as Ctrl-C is
        with interrupts.taken_safely(signal.SIGTERM), \
                Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(),
                         TimeElapsedColumn(), console=err, transient=True) as prog:
            task = prog.add_task("sweep", total=None)
            result = sw.sweep(spec, out, backend,
                              lambda done, total: prog.update(task, completed=done, total=total))
    except KeyboardInterrupt:
        backend.close(abort=True)          # no worker outlives the command
        kept = len(sw.Journal(out).rows) if (out / sw.JOURNAL).exists() else 0
        err.print(f"sweep interrupted: {kept} finished row(s) kept in {out / sw.JOURNAL}; the "
                  "same command resumes from them" if kept else
                  "sweep interrupted before any row finished: nothing kept; the same command "
                  "starts it again", markup=False)
        raise SystemExit(130) from None
    finally:
        backend.close()
    con = console()
    where = f"Ray ({ray})" if ray is not None else f"{backend.parallelism} local worker(s)"
    con.print(f"{strategy}: {len(result.rows)} rows, {result.ran} backtests run, {result.reused} "
              f"reused from {shown(out / sw.JOURNAL)} on {where}")
    if result.skipped:
        con.print(f"skipped {result.skipped} parameter set(s) the strategy refuses; first: "
                  f"{result.skip_reason}", markup=False)
    for note in notes:
        con.print(note, markup=False)
    print_tables(result, objective, top, con)
    if result.rows:
        from backtests.metrics import short_span_note

        note = short_span_note(min(window_days(r) for r in result.rows),
                               "day(s) of bars in the shortest window")
        if note is not None:
            con.print(note)
    con.print(f"results: {shown(out / sw.RESULTS)}")
    try:
        with interrupts.taken_safely(signal.SIGTERM):
            note = heatmap_png(result, objective, out / "heatmap.png", trials is not None)
    except KeyboardInterrupt:
        err.print(f"sweep interrupted while drawing {out / 'heatmap.png'}: not written; the "
                  f"results above are in {out / sw.RESULTS}", markup=False)
        raise SystemExit(130) from None
    con.print(note, markup=False)


def register(app: typer.Typer) -> None:
    app.command("sweep", short_help="Sweep a strategy's parameters over datasets (grid, Optuna, "
                "walk-forward; every core or Ray).")(sweep_command)
