"""`liqbot heatmap DATASET [--timeline FILE.csv]` and `liqbot heatmap validate`."""

from __future__ import annotations

import contextlib
import csv
import sys
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bot.cli.paths import cell, check_output, console, dumps, shown, writing
from bot.cli.tiers import TiersOption, brackets_for
from bot.data import dataset as ds_io
from bot.data.dataset import iso
from bot.data.resample import resample
from bot.data.synthetic import CROWDING_BIAS, SynthSpec, generate
from bot.errors import LiqbotError
from bot.mechanics import brackets as br
from bot.risk import inputs as ri
from bot.signals import clusters as cl
from bot.signals import detectors as dt
from bot.signals import heatmap as hm
from bot.signals import pipeline, stream
from bot.signals import positioning as ps
from bot.signals.validation import score_at
from bot.text import amount, count

NEAR = 0.03
#: 10000-01-01T00:00Z in ms: a larger number is not a time in ms (microseconds, a typo)
END_MS = 253_402_300_800_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso_ms(t: str) -> int:
    """ms of an ISO time; an offset (+02:00, Z) is applied, a time without one is UTC."""
    with contextlib.suppress(ValueError):
        d = datetime.fromisoformat(t)
        if d.tzinfo is not None:       # numpy would warn about (yet apply) the offset
            return (d - EPOCH) // timedelta(milliseconds=1)
    with warnings.catch_warnings():    # numpy only warns about an offset it cannot read
        warnings.simplefilter("error")
        try:
            return int(np.datetime64(t.rstrip("Zz").replace(" ", "T"), "ms").astype(np.int64))
        except Warning:
            raise ValueError(t) from None


def parse_time(text: str, flag: str = "--at") -> int:
    """'2025-10-10T21:00Z', '2025-10-10T23:00+02:00', '2025-10-10 21:00', '2025-10-10' or
    ms since the epoch (before year 10000)."""
    t = text.strip()
    try:
        ms = int(t) if t.isdigit() else _iso_ms(t)
    except (ValueError, OverflowError):
        ms = -1
    if not 0 <= ms < END_MS:
        raise LiqbotError(f"{flag}: expected a UTC time like 2025-10-10T21:00Z or ms since the "
                          f"epoch, got {text[:40]!r}") from None
    return ms


#: seeds one `heatmap validate` scores at most (each is a synthetic day, about a second)
MAX_SEEDS = 1000


def parse_seeds(text: str) -> list[int]:
    """'1..5' or '1,2,7': distinct seeds >= 0, at most MAX_SEEDS (a mean over a seed
    listed twice would count it twice; 1..100000 ran for a day)."""
    try:
        if ".." in text:
            a, b = (int(x) for x in text.split("..", 1))
            if b - a + 1 > MAX_SEEDS:
                raise LiqbotError(f"--seeds: {text!r} is {b - a + 1:,} seeds; at most "
                                  f"{MAX_SEEDS:,} (each scores a synthetic day)")
            seeds = list(range(a, b + 1))
        else:
            seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise LiqbotError(f"--seeds: expected a range like 1..5 or a list like 1,2,7, got {text!r}")
    if len(seeds) > MAX_SEEDS:
        raise LiqbotError(f"--seeds: {len(seeds):,} seeds; at most {MAX_SEEDS:,} (each scores "
                          "a synthetic day)")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise LiqbotError(f"--seeds: seed {twice[0]} is listed twice (the mean would count it "
                          "twice)")
    return seeds


def _atr(bars: Any, n: int = 14) -> float:
    """Average true range over the last n HOURLY bars (quote), the unit of `distance_atr`."""
    if bars.interval_ms < 3_600_000 and 3_600_000 % bars.interval_ms == 0:
        bars = resample(bars, 3_600_000)
    h, lo, c = bars["high"][-n - 1:], bars["low"][-n - 1:], bars.close[-n - 1:]
    tr = np.maximum(h[1:] - lo[1:], np.maximum(abs(h[1:] - c[:-1]), abs(lo[1:] - c[:-1])))
    return float(tr.mean()) if len(tr) else 0.0


def snapshot(directory: Path, at: str | None, tiers: Path | None = None) -> dict[str, Any]:
    """Clusters and crowding at `at` (default: the last bar), from bars up to `at` only."""
    ds = ds_io.load(directory)
    bars = ds.bars
    if at is not None:
        t = parse_time(at)
        if t < bars.start_ms or t > bars.end_ms:
            raise LiqbotError(f"--at: {iso(t)} is outside the dataset "
                              f"({iso(bars.start_ms)} .. {iso(bars.end_ms)})")
        # the bars CLOSED by t: the one still running at t is not known yet (on 4h bars
        # it would hold up to 4 hours after t)
        bars = bars.between(None, t - bars.interval_ms + 1)
    if len(bars) < 2:
        if at is None:
            raise LiqbotError(f"{shown(str(directory))}: {len(bars)} bar(s); the heatmap needs "
                              "at least two")
        raise LiqbotError(f"--at {at}: {len(bars)} bar(s) up to that time; the heatmap needs "
                          "at least two (give a later --at)")
    b = brackets_for(bars.symbol, tiers)
    sig = pipeline.compute(bars, b, hm.params_for_interval(
        bars.interval_ms), near=NEAR)
    mark = float(stream.bar_column(bars, stream.X_MARK_CLOSE)[-1])   # NaN mark: last trade
    clusters = cl.find_clusters(sig.heatmap.mass, sig.heatmap.meta, mark, _atr(bars))
    row = sig.positioning[-1]
    bph = stream.bars_per_hour(bars.interval_ms)
    warm_bars = ri.crowding_warm_bar(bph) + 1          # the rules read crowding from here
    warm = len(bars) >= warm_bars
    oi = stream.oi_column(bars)
    oi_units = "none" if oi is None else "relative" if oi == stream.OI_FALLBACK else "base"
    comps = {name: (None if not np.isfinite(row[i]) else float(row[i]))
             for i, name in enumerate(ps.COMPONENT_NAMES) if not name.startswith("crowding")}
    return {
        # `at`: the close of the last bar seen, the time `mark` is the price of
        "at": iso(bars.end_ms), "symbol": bars.symbol, "mark": mark, "_brackets": b,
        "map": "default", "notional_units": "relative" if oi_units == "relative" else "quote",
        "confidence": float(sig.heatmap.confidence[-1]),
        "clusters": [{"price": c.price, "side": c.side, "notional": c.notional,
                      "distance_pct": c.distance_pct, "distance_atr": c.distance_atr,
                      "share": c.share, "low": c.low, "high": c.high} for c in clusters],
        # the map holds only positions opened inside the dataset; crowding is read by the
        # rules after its warm-up (both said, not hidden: docs/heatmap.md)
        "history_hours": len(bars) * bars.interval_ms / 3_600_000,
        "half_life_hours": hm.params_for_interval(bars.interval_ms).half_life_bars
        * bars.interval_ms / 3_600_000,
        "crowding": {"long": float(row[ps.C_LONG_SCORE]) if warm else None,
                     "short": float(row[ps.C_SHORT_SCORE]) if warm else None,
                     "warm_up_hours": warm_bars * bars.interval_ms / 3_600_000,
                     "components": comps,
                     "explain": {s: ps.explain(row, s, NEAR * 100) for s in ("long", "short")}},
        "oi_units": oi_units,
        # what each side of the map holds (quote, or relative units): 0 leaves its cluster
        # table empty; the open interest at the dataset's first bar and now says why
        "side_totals": {"long": float(sig.heatmap.long_total[-1]),
                        "short": float(sig.heatmap.short_total[-1])},
        "open_interest": None if oi is None else _oi_ends(bars[oi]),
        "_signals": sig, "_bars": bars,
    }


def _oi_ends(oi: np.ndarray) -> dict[str, float | None]:
    """The first and the last known open interest (NaN until the first bucket closes)."""
    known = oi[np.isfinite(oi)]
    return {"first": float(known[0]) if len(known) else None,
            "now": float(known[-1]) if len(known) else None}


def _no_cluster(s: dict[str, Any], side: str) -> str:
    """Why a side's cluster table is empty (the map holds nothing there, or nothing dense)."""
    if s["side_totals"][side] > 0.0:
        return (f"no {side} cluster: no level of the {side} side stands out (its mass "
                f"{amount(s['side_totals'][side])} is spread evenly)")
    oi = s.get("open_interest") or {}
    first, now = oi.get("first"), oi.get("now")
    if first is not None and now is not None and now <= first:
        return (f"no {side} cluster: the map is empty. It holds the positions opened inside "
                f"the dataset, placed where open interest rose; open interest is now "
                f"{now:,.0f}, at or below the {first:,.0f} of the dataset's first bar, so "
                "every position it placed has been closed")
    return f"no {side} cluster: the map holds no {side} positions at this bar"


def print_snapshot(s: dict[str, Any], top: int = 5) -> None:
    """The snapshot as tables: clusters per side, then crowding (or its warm-up)."""
    con = console()
    conf = "" if s["confidence"] >= 1 else " (no open interest: volume proxy, lower confidence)"
    con.print(f"[bold]{shown(s['symbol'])}[/] at {s['at']}, mark {s['mark']:,.2f}{conf}")
    units = "quote" if s["notional_units"] == "quote" else "relative units, not USD"
    con.print(f"map: {s['map']} (the one the risk rules read); notionals in {units}")
    if s.get("oi_units") == "relative":
        con.print("open interest: the stablecoin-margined series (unit undocumented), so "
                  "notionals are relative, not USD")
    for side in ("long", "short"):
        t = Table(title=f"{side} liquidation clusters ({'below' if side == 'long' else 'above'}"
                        " the mark)", title_justify="left")
        for col in ("price", "distance", "ATRs", "notional", "share"):
            t.add_column(col, justify="right")
        rows = [c for c in s["clusters"] if c["side"] == side][:top]
        for c in rows:
            t.add_row(f"{c['price']:,.2f}", f"{c['distance_pct']:+.2f}%",
                      cell("{:.1f}", c["distance_atr"]), amount(c["notional"]),
                      f"{c['share'] * 100:.0f}%")
        if not rows:
            t.add_row("-", "-", "-", "-", "-")
        con.print(t)
        if not rows:
            con.print(_no_cluster(s, side))
    h, half = s["history_hours"], s["half_life_hours"]
    h_shown = f"{int(h * 10) / 10:.1f}"                   # 23.98 h is not yet 24.0
    if h < half:
        con.print(f"note: the map holds {h_shown} h of bars (half-life {half:g} h): positions "
                  "opened before the dataset starts are missing, so the clusters are partial")
    cr = s["crowding"]
    if cr["long"] is None:
        con.print(f"crowding: - (warming up: the rules read it after {cr['warm_up_hours']:g} h "
                  f"of bars, {h_shown} h so far)")
        return
    con.print(f"crowding: long {cr['long']:.2f}, short {cr['short']:.2f}")
    for side in ("long", "short"):
        con.print(f"  {cr['explain'][side]}")


def _refuse_others(ctx: typer.Context, flags: dict[str, str], why: str) -> None:
    """Options of another mode given on the line are an error, not silently ignored."""
    given = [flag for name, flag in flags.items()     # typer's own click: compare by name
             if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"]
    if given:
        one = len(given) == 1
        raise LiqbotError(f"{', '.join(given)}: "
                          f"{why.format(belong='belongs' if one else 'belong')}; drop "
                          f"{'it' if one else 'them'}")


def heatmap_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="dataset directory, or `validate`")],
    at: Annotated[str | None, typer.Option("--at", help="UTC time (default: last bar)")] = None,
    png: Annotated[Path | None, typer.Option("--png", help="draw a time x price heatmap")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    seeds: Annotated[str, typer.Option("--seeds", help="validate: 1..5 or 1,2,7")] = "1..5",
    crowding: Annotated[str, typer.Option("--crowding", help="validate: long|short|none")]
    = "long",
    timeline: Annotated[Path | None, typer.Option(
        "--timeline", help="write a per-bar CSV (frozen-map estimates, near masses, crowding)")]
    = None,
    map_name: Annotated[str, typer.Option(
        "--map", help="timeline: the map behind est_*_liq and the masses: auto (calibrated-4h "
        "on bars of 4h or longer, else default), default (the 1m defaults) or calibrated-4h "
        "(calibrated on real 4h liquidations, docs/heatmap.md)")] = "auto",
    calibrated: Annotated[bool, typer.Option(
        "--calibrated-4h", help="timeline: same as --map calibrated-4h")] = False,
    tiers: TiersOption = None,
) -> None:
    """Liquidation heatmap: top clusters per side and the crowding score of a dataset.

    `liqbot heatmap validate` scores the estimator on synthetic cascade days whose true
    position book is known (see docs/heatmap.md).
    """
    if target == "validate":
        _refuse_others(ctx, {"at": "--at", "png": "--png", "timeline": "--timeline",
                             "map_name": "--map", "calibrated": "--calibrated-4h",
                             "tiers": "--tiers"},
                       "`heatmap validate` scores synthetic days and takes --seeds, "
                       "--crowding and --json only")
        validate(seeds, crowding, as_json)
        return
    _refuse_others(ctx, {"seeds": "--seeds", "crowding": "--crowding"},
                   "{belong} to `heatmap validate`, not to `heatmap DATASET`")
    if timeline is not None:
        _refuse_others(ctx, {"at": "--at", "png": "--png", "as_json": "--json"},
                       "{belong} to the snapshot; --timeline writes every bar as CSV")
    if map_name not in MAPS:
        raise LiqbotError(f"--map: expected one of {', '.join(MAPS)}, got {map_name!r}")
    if calibrated:
        if map_name not in ("auto", "calibrated-4h"):
            raise LiqbotError(f"--calibrated-4h contradicts --map {map_name}")
        map_name = "calibrated-4h"
    if map_name != "auto" and timeline is None:
        raise LiqbotError("--map / --calibrated-4h choose the map of --timeline; the "
                          "clusters and crowding are the signals the risk rules read "
                          "(the default map): give --timeline FILE.csv")
    if timeline is not None:
        out = check_output(timeline, "--timeline")
        n, used, units = write_timeline(Path(target), out, map_name, tiers)
        console(stderr=True).print(
            f"wrote {count(n, 'bar')} to {shown(out or 'stdout')} (map: {used}"
            f"{', auto' if map_name == 'auto' else ''}), masses and estimates in {units}")
        return
    check_output(png, "--png", stdout_ok=False)
    s = snapshot(Path(target), at, tiers)
    if png is not None:
        from bot.cli.heatmap_plot import draw
        with writing(png, "--png"):
            draw(s["_bars"], s["_brackets"], s, png)
    if as_json:
        print(dumps({k: v for k, v in s.items() if not k.startswith("_")}))
    else:
        print_snapshot(s)
    if png is not None and not as_json:
        console().print(f"wrote {shown(png)}")


#: the issue's layout, in its order (ts is the bar open, int64 ms UTC)
TIMELINE_COLUMNS = ("ts", "close", "long_mass_1pct", "long_mass_3pct", "long_mass_5pct",
                    "short_mass_1pct", "short_mass_3pct", "short_mass_5pct", "est_long_liq",
                    "est_short_liq", "crowd_long", "crowd_short", "cascade", "confidence")
CHUNK = 20_000
MAPS = ("auto", "default", "calibrated-4h")
H4_MS = 4 * 3_600_000


def resolve_map(map_name: str, interval_ms: int) -> str:
    """`auto` -> `calibrated-4h` on bars of 4 hours or longer (the bar length it was
    calibrated and scored on), `default` otherwise; other names as they are."""
    if map_name == "auto":
        return "calibrated-4h" if interval_ms >= H4_MS else "default"
    return map_name


def timeline_rows(bars: Any, calibrated: bool = False, tiers: Path | None = None
                  ) -> dict[str, np.ndarray]:
    """Per-bar timeline columns (quote notional for masses and estimates; see docs). With
    `calibrated` the frozen-map columns use `heatmap.CALIBRATED_4H` (its tiers, weights and
    near-price layer; the half-life, 540 4h bars, converted to the dataset's bar length).
    Crowding and the cascade state are the signals the risk rules read (the default map)."""
    b = brackets_for(bars.symbol, tiers)
    p = hm.params_for_interval(bars.interval_ms)
    levs, weights = hm.DEFAULT_LEVERAGES, hm.DEFAULT_WEIGHTS
    if calibrated:
        p = hm.params_for_interval(bars.interval_ms, hm.CALIBRATED_4H,
                                   half_life_hours=hm.CALIBRATED_4H.half_life_bars * 4.0)
        levs, weights = hm.CALIBRATED_4H_LEVERAGES, hm.CALIBRATED_4H_WEIGHTS
    n = len(bars)
    with Progress(console=Console(stderr=True), transient=True,
                  disable=n < 5 * CHUNK) as prog:
        task = prog.add_task("heatmap timeline", total=n + max(n // 4, 1))
        tl = hm.timeline(bars, b, p, levs, weights, chunk=CHUNK,
                         progress=lambda done: prog.update(task, completed=done))
        sig = pipeline.compute(bars, b, hm.params_for_interval(bars.interval_ms), near=NEAR)
        prog.update(task, completed=n + max(n // 4, 1))
    # crowding as the rules read it: empty (NaN) until its warm-up has been seen
    crowd = sig.positioning[:, [ps.C_LONG_SCORE, ps.C_SHORT_SCORE]].copy()
    crowd[:ri.crowding_warm_bar(stream.bars_per_hour(bars.interval_ms))] = np.nan
    cols = {"ts": bars.ts, "close": bars.close, "est_long_liq": tl["est_long"],
            "est_short_liq": tl["est_short"],
            "crowd_long": crowd[:, 0], "crowd_short": crowd[:, 1],
            "cascade": sig.detectors[:, dt.D_CASCADE_STATE], "confidence": tl["confidence"]}
    for side in ("long", "short"):
        for x in (1, 3, 5):
            cols[f"{side}_mass_{x}pct"] = tl[f"{side}_mass_{x}pct"]
    return cols


def write_timeline(directory: Path, out: Path | None, map_name: str = "auto",
                   tiers: Path | None = None) -> tuple[int, str, str]:
    """`liqbot heatmap DATASET --timeline FILE.csv` (None: stdout): one row per bar; returns
    the count, the map used (`resolve_map`) and the unit of the masses and estimates."""
    bars = ds_io.load(directory).bars
    units = ("the stablecoin OI series' unit x price (relative, not USD)"
             if stream.oi_column(bars) == stream.OI_FALLBACK else "quote notional")
    used = resolve_map(map_name, bars.interval_ms)
    cols = timeline_rows(bars, used == "calibrated-4h", tiers)
    with writing(out, "--timeline"), (out.open("w", newline="") if out is not None else
                                      contextlib.nullcontext(sys.stdout)) as f:
        w = csv.writer(f)
        w.writerow(TIMELINE_COLUMNS)
        for i in range(len(bars)):
            row: list[Any] = []
            for c in TIMELINE_COLUMNS:
                v = cols[c][i]
                if c == "ts":
                    row.append(int(v))
                elif c == "cascade":
                    row.append(int(v) if np.isfinite(v) else "")
                else:
                    row.append("" if not np.isfinite(v) else f"{float(v):.10g}")
            w.writerow(row)
    return len(bars), used, units


def validate(seeds_text: str, crowding: str, as_json: bool) -> None:
    if crowding not in CROWDING_BIAS:
        raise LiqbotError(f"--crowding: expected one of long, short, none, got {crowding!r}")
    seeds = parse_seeds(seeds_text)
    b = br.shipped("binance", "BTCUSDT")
    rows = []
    with Progress(console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task("scoring seeds", total=len(seeds))
        for seed in seeds:
            ds = generate(SynthSpec(seed=seed, days=3, crowding=crowding))
            sc = score_at(ds, b, 2 * 1440)
            rows.append({"seed": seed, "capture_top10": sc.capture_top10,
                         "precision_top10": sc.precision_top10, "spearman": sc.spearman,
                         "capture_top10_visited": sc.capture_top10_visited,
                         "spearman_visited": sc.spearman_visited,
                         "raw_mass_capture_top10": sc.raw_mass_capture_top10,
                         "oracle_capture_top10": sc.oracle_capture_top10,
                         "oracle_capture_top10_visited": sc.oracle_capture_top10_visited,
                         "realized_notional": sc.realized_notional})
            prog.advance(task)
    mean = float(np.nanmean([r["capture_top10"] for r in rows]))
    if as_json:
        print(dumps({"seeds": rows, "mean_capture_top10": mean, "crowding": crowding,
                     "t0": "start of day 3", "horizon_hours": 24}))
        return
    t = Table(title=f"heatmap validation: synthetic {crowding}-crowded days, t0 = start of "
                    "day 3, next 24h (random baseline 0.10)", title_justify="left")
    for col in ("seed", "capture top10", "precision", "spearman", "capture (visited)",
                "raw mass", "oracle", "realised"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(str(r["seed"]), f"{r['capture_top10']:.3f}", f"{r['precision_top10']:.2f}",
                  f"{r['spearman']:.2f}", f"{r['capture_top10_visited']:.3f}",
                  f"{r['raw_mass_capture_top10']:.3f}", f"{r['oracle_capture_top10']:.3f}",
                  f"{r['realized_notional'] / 1e6:,.0f}M")
    con = console()
    con.print(t)
    con.print(f"mean capture_top10 = {mean:.3f}")


def validate_command(
    seeds: Annotated[str, typer.Option("--seeds", help="1..5 or 1,2,7")] = "1..5",
    crowding: Annotated[str, typer.Option("--crowding", help="long|short|none")] = "long",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """liqbot heatmap validate: score the estimator on synthetic cascade days whose true
    position book is known (capture of the next 24h's liquidations; docs/heatmap.md)."""
    validate(seeds, crowding, as_json)


def register(app: typer.Typer) -> None:
    app.command("heatmap")(heatmap_command)
    # `liqbot heatmap validate ...` is routed here by bot.cli.main (own options and --help)
    app.command("heatmap-validate", hidden=True)(validate_command)

