"""All signals over a bar series, for the CLI, the validation and the backtester.

Every part is stepped bar by bar by the one kernel of `bot.signals.stream` (the daemon
steps the same kernel per closed bar): heatmap -> positioning (uses the heatmap's
near-price masses) -> detectors (use the heatmap's consumption) -> risk inputs and the fill
window. This module runs it over a whole Bars container and slices the output rows back
into the `Signals` the strategies and the CLI read. Causality is tested on prefixes.

Memory: `compute_chunked` steps the kernel `CHUNK` bars at a time and keeps only the
output columns asked for, so a year of 1m bars never holds the (n, N_X) input rows or the
(n, N_OUT) output rows at once; `LazySignals` defers the strategies' columns until one is
read (the backtester's loop needs only the risk and fill columns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from bot.data.bars import Bars
from bot.mechanics.brackets import Brackets
from bot.risk import engine as en
from bot.signals import detectors as dt
from bot.signals import heatmap as hm
from bot.signals import positioning as ps
from bot.signals import stream as sm

#: Bars per call of the stream kernel in `compute_chunked`: bounds its scratch input and
#: output rows to CHUNK x (N_X + N_OUT) float64 (2.5 MB).
CHUNK = 4_096


class Signals(NamedTuple):
    heatmap: hm.HeatmapRun
    positioning: np.ndarray   # (n, ps.N_COMPONENTS)
    detectors: np.ndarray     # (n, dt.N_DETECTOR)


#: the Signals fields
PARTS: tuple[str, ...] = Signals._fields
# output columns of each part's arrays: the heatmap's per-bar series (1-D) then its
# clusters (n, 6); positioning (n, N_COMPONENTS); detectors (n, N_DETECTOR)
_SPANS: dict[str, tuple[tuple[int, int], ...]] = {
    "heatmap": (*((sm.O_HEAT + j, sm.O_HEAT + j + 1) for j in range(sm.H_CLUSTER_BELOW)),
                (sm.O_HEAT + sm.H_CLUSTER_BELOW, sm.O_HEAT + sm.N_HEAT)),
    "positioning": ((sm.O_POS, sm.O_POS + ps.N_COMPONENTS),),
    "detectors": ((sm.O_DET, sm.O_DET + dt.N_DETECTOR),)}


def _part_arrays(n: int, parts: tuple[str, ...]) -> dict[str, list[np.ndarray]]:
    """Empty arrays for the columns of `parts` over n bars (`_SPANS` order)."""
    return {name: [np.empty(n) if name == "heatmap" and k < sm.H_CLUSTER_BELOW
                   else np.empty((n, b - a)) for k, (a, b) in enumerate(_SPANS[name])]
            for name in parts}


def _fill_parts(arrays: dict[str, list[np.ndarray]], t0: int, out: np.ndarray) -> None:
    """Copy the columns of output rows `out` (bars t0 .. t0 + len(out)) into `arrays`."""
    t1 = t0 + len(out)
    for name, arrs in arrays.items():
        for arr, (a, b) in zip(arrs, _SPANS[name], strict=True):
            arr[t0:t1] = out[:, a] if arr.ndim == 1 else out[:, a:b]


def _parts(arrays: dict[str, list[np.ndarray]], s: sm.StreamState, snaps: np.ndarray,
           snap_lo: np.ndarray) -> dict[str, Any]:
    """The Signals fields of filled `_part_arrays` and the stream's final state (the
    heatmap's whole map is materialised in place)."""
    out: dict[str, Any] = {name: arrs[0] for name, arrs in arrays.items()}
    if "heatmap" in arrays:
        hm.materialize(s.mass, s.meta)
        out["heatmap"] = hm.HeatmapRun(*arrays["heatmap"], s.mass, s.meta, snaps, snap_lo)
    return out


def _setup(bars: Bars, brackets: Brackets, kw: dict[str, Any],
           first_close: float) -> tuple[sm.StreamConfig, sm.StreamState]:
    return (sm.config(bars.interval_ms, brackets, **kw),
            sm.new_state(first_close, bars.interval_ms, brackets, **kw))


def compute_stream(bars: Bars, brackets: Brackets, fill_window: int = 60,
                   p: hm.HeatmapParams = hm.HeatmapParams(),
                   levs: np.ndarray = hm.DEFAULT_LEVERAGES,
                   weights: np.ndarray = hm.DEFAULT_WEIGHTS, near: float = 0.03,
                   stride: int = 0, crowding: ps.CrowdingWeights = ps.CrowdingWeights(),
                   detector: dt.DetectorParams = dt.DetectorParams(),
                   x: np.ndarray | None = None) -> tuple[Signals, np.ndarray]:
    """Signals plus the full (n, stream.N_OUT) output matrix of the stream kernel (risk
    signal matrix in columns O_SIG:O_SIG + en.N_SIG, fill windows in O_FILL + F_*).
    Heatmap snapshots every `stride` bars when stride > 0. `x`: the bars' input rows when
    the caller already built them. Holds every row at once: the backtester uses
    `compute_chunked`."""
    x = sm.bar_matrix(bars) if x is None else x
    kw: dict[str, Any] = dict(p=p, levs=levs, weights=weights, near=near, crowding=crowding,
                              detector=detector, fill_window=fill_window)
    c, s = _setup(bars, brackets, kw, float(x[0, sm.X_CLOSE]))
    out, snaps, snap_lo = sm.run_snapshots(s, c, x, stride)
    arrays = _part_arrays(len(out), PARTS)
    _fill_parts(arrays, 0, out)
    return Signals(**_parts(arrays, s, snaps, snap_lo)), out


def stream_chunks(bars: Bars, brackets: Brackets, sink: Callable[[int, np.ndarray], None],
                  chunk: int = CHUNK, **kw: Any) -> sm.StreamState:
    """Run the stream kernel over `bars` `chunk` bars at a time, handing each chunk's
    output rows to `sink(t0, rows)` (rows of bars t0 .. t0 + len(rows); the buffer is not
    kept); returns the final state. The state carries over, so the rows equal `run_all`
    over every bar. `kw`: `stream.config`'s parameters. Needs at least one bar."""
    n = len(bars)
    c, s = _setup(bars, brackets, kw, float(bars.close[0]))
    for t0 in range(0, n, chunk):
        sink(t0, sm.run_all(s, c, sm.bar_matrix(bars.take(slice(t0, min(n, t0 + chunk))))))
    return s


def compute_chunked(bars: Bars, brackets: Brackets, fill_window: int = 60,
                    signals: bool = True, risk: bool = True, chunk: int = CHUNK,
                    p: hm.HeatmapParams = hm.HeatmapParams(),
                    levs: np.ndarray = hm.DEFAULT_LEVERAGES,
                    weights: np.ndarray = hm.DEFAULT_WEIGHTS, near: float = 0.03,
                    crowding: ps.CrowdingWeights = ps.CrowdingWeights(),
                    detector: dt.DetectorParams = dt.DetectorParams(),
                    ) -> tuple[Signals | None, np.ndarray, np.ndarray]:
    """`compute_stream`'s results without its (n, N_OUT) matrix: (Signals when `signals`,
    else None; the risk signal matrix (n, en.N_SIG) and fill windows (n, N_FILL) when
    `risk`, else (0, ...) arrays). Equal bit for bit to the columns of `compute_stream`.
    Needs at least one bar."""
    parts, sig, win = _compute(bars, brackets, PARTS if signals else (), risk, chunk,
                               p=p, levs=levs, weights=weights, near=near, crowding=crowding,
                               detector=detector, fill_window=fill_window)
    return (Signals(**parts) if signals else None), sig, win


def _compute(bars: Bars, brackets: Brackets, parts: tuple[str, ...], risk: bool, chunk: int,
             **kw: Any) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The Signals fields named in `parts` (a dict) and, with `risk`, the risk signal matrix
    and fill windows, from one chunked kernel run keeping only those columns."""
    n = len(bars)
    arrays = _part_arrays(n, parts)
    sig = np.empty((n if risk else 0, en.N_SIG))
    win = np.empty((n if risk else 0, sm.N_FILL))

    def sink(t0: int, out: np.ndarray) -> None:
        _fill_parts(arrays, t0, out)
        if risk:
            sig[t0:t0 + len(out)] = out[:, sm.O_SIG:sm.O_SIG + en.N_SIG]
            win[t0:t0 + len(out)] = out[:, sm.O_FILL:sm.O_FILL + sm.N_FILL]

    s = stream_chunks(bars, brackets, sink, chunk, **kw)
    return _parts(arrays, s, np.zeros((0, 2, s.mass.shape[1])), np.zeros(0)), sig, win


def heatmap_clusters(bars: Bars, brackets: Brackets, fill_window: int = 60,
                     chunk: int = CHUNK) -> np.ndarray:
    """`compute(bars, brackets).heatmap.clusters` (n, 6) alone, from a chunked kernel run
    that keeps no other column (the report's price panel). Needs at least one bar."""
    a, b = sm.O_HEAT + sm.H_CLUSTER_BELOW, sm.O_HEAT + sm.N_HEAT
    clusters = np.empty((len(bars), b - a))

    def sink(t0: int, out: np.ndarray) -> None:
        clusters[t0:t0 + len(out)] = out[:, a:b]

    stream_chunks(bars, brackets, sink, chunk, fill_window=fill_window)
    return clusters


class LazySignals:
    """Stands in for the `Signals` of `bars` (`compute_chunked`'s, with `fill_window`),
    computing a field when it is first read: the first one alone, any later ones together
    (one kernel run each time, keeping only those columns). Iteration, indexing and
    comparison act on the whole Signals. The backtester hands it to strategies: one that
    reads no signal costs neither the time nor the memory of the (n, 38) signal columns,
    one that reads the detectors holds those 11 columns only. Pass `get()` where a real
    NamedTuple is required (a numba function taking the whole Signals)."""

    _fields = Signals._fields

    def __init__(self, bars: Bars, brackets: Brackets, fill_window: int = 60) -> None:
        self._args = (bars, brackets, fill_window)
        self._done: dict[str, Any] = {}

    @property
    def computed(self) -> tuple[str, ...]:
        """The fields computed so far."""
        return tuple(f for f in PARTS if f in self._done)

    def _load(self, names: tuple[str, ...]) -> None:
        bars, brackets, fill_window = self._args
        missing = tuple(f for f in PARTS if f in names and f not in self._done)
        if missing:
            self._done.update(_compute(bars, brackets, missing, False, CHUNK,
                                       fill_window=fill_window)[0])

    def _field(self, name: str) -> Any:
        if name not in self._done:
            self._load((name,) if not self._done else PARTS)
        return self._done[name]

    @property
    def heatmap(self) -> hm.HeatmapRun:
        return self._field("heatmap")

    @property
    def positioning(self) -> np.ndarray:
        return self._field("positioning")

    @property
    def detectors(self) -> np.ndarray:
        return self._field("detectors")

    def get(self) -> Signals:
        """The whole Signals (every missing field computed now)."""
        self._load(PARTS)
        return Signals(**self._done)

    def __getattr__(self, name: str) -> Any:        # _asdict, _replace, count, index
        if name.startswith("__") or name in ("_args", "_done"):
            raise AttributeError(name)
        return getattr(self.get(), name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.get())

    def __len__(self) -> int:
        return len(PARTS)

    def __getitem__(self, i: Any) -> Any:
        return self.get()[i]

    def __eq__(self, other: object) -> bool:
        return self.get() == (other.get() if isinstance(other, LazySignals) else other)

    __hash__ = None  # type: ignore[assignment]  # like the arrays inside: unhashable

    def __reduce__(self) -> tuple[Any, ...]:
        return Signals, tuple(self.get())

    def __repr__(self) -> str:
        return f"LazySignals(computed={list(self.computed)})"


def compute(bars: Bars, brackets: Brackets, p: hm.HeatmapParams = hm.HeatmapParams(),
            levs: np.ndarray = hm.DEFAULT_LEVERAGES, weights: np.ndarray = hm.DEFAULT_WEIGHTS,
            near: float = 0.03, stride: int = 0,
            crowding: ps.CrowdingWeights = ps.CrowdingWeights(),
            detector: dt.DetectorParams = dt.DetectorParams()) -> Signals:
    """Heatmap, positioning and detectors for every bar of `bars`."""
    if stride <= 0 and len(bars):
        return compute_chunked(bars, brackets, risk=False, p=p, levs=levs, weights=weights,
                               near=near, crowding=crowding, detector=detector)[0]  # type: ignore[return-value]
    return compute_stream(bars, brackets, p=p, levs=levs, weights=weights, near=near,
                          stride=stride, crowding=crowding, detector=detector)[0]
