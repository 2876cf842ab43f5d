"""Lean compilations of the shared numba kernels for the hot loops (the backtester's bar
loop, the batch signal run).

Why: numba reference-counts every array a compiled function receives, views it creates
(`sig[t]`, `st[a:b]`) and arrays it passes on, with ATOMIC increments and decrements (NRT).
A call between separately compiled functions is not inlined, so its pairs are not pruned:
profiled on this project's 2-core VM, 70% of the backtest loop's time was `lock inc` /
`lock dec` in NRT_incref / NRT_decref. Functions that allocate nothing do not need the
counts: the arrays they touch are owned by the (Python) caller for the whole call.

`lean(f)` compiles the SAME Python source as the dispatcher `f` (same bytecode, same
callees) with numba's NRT off, and does the same, recursively, for every dispatcher `f`
reaches by a global name or a module attribute (`ac.equity`) in this project's packages.
Nothing is copied or re-written: the arithmetic is the same IEEE arithmetic (no fastmath,
same error model: a division by zero still raises), so the results are bit-identical to
the public functions, which stay as they are for the daemon, the paper broker and the
emulator. A function whose bytecode names an allocating numpy call keeps NRT on (it needs
it); one that allocates otherwise fails to compile loudly. NOT guarded: an allocating
callee (NRT kept) that RETURNS a new array to a lean caller leaks that array (the caller
never frees it; a lean `bot.risk.engine.evaluate` would, via `new_risk_state`): only
functions whose whole tree passes arrays in, never out, may be made lean.

Inlined: the lean variants of the per-bar trading step's functions (`bot.execution`,
`bot.mechanics`, `bot.risk`: the kernel, account, fills, fees, funding, liquidation,
brackets, risk engine) are marked for LLVM to inline into their lean caller (numba's
`forceinline`: LLVM's alwaysinline, after numba has typed each function once; not
`inline='always'`, which re-types the callee at every call site). Why: numba passes an
array argument as its exploded struct (7 words for 1-D, 9 for 2-D), so a call such as
`liquidation_price(acct, pos, i, marks, floor, cap, mmr, cum)` pushes ~60 words, and
LLVM's own heuristics leave the larger callees (`decide`, `evaluate_state`,
`liquidation_price`, `equity`, ...) as calls: profiled, those pushes were most of the
loop's time (`decide`'s own body 37-45% of samples, mostly `push` of its callees'
arguments). Inlined, the loop ran 2.5x faster (1 year: 53 -> 21 ms of CPU) at no
measurable cold-compile cost. LLVM inlining does not change the IEEE arithmetic (no
fastmath, no FMA contraction), so the results stay bit-identical (tests/test_lean.py).
The signal kernels (`bot.signals`, larger, called per bin) are not marked: inlining them
into the stream step cost ~30 s of compile.

Entry points: numba builds a Python and a C entry point for every function it compiles,
by default. Only a root (`lean(f)`: a loop called from Python) gets them; every lean
callee, inlined or not, is compiled without (only lean callers call it): about 0.7 s of
CPU off a cold one-day backtest (the signal kernels' ~25 callees). An inlined variant is
never a root, so `lean` refuses such a function.

Lean variants are cached on disk like the originals (`cache=True`) under their own name
(`<qualname>__lean` for a root, `<qualname>__lean_sub` for a callee, `<qualname>__lean_inl`
when inlined), so they never collide with the originals' cache entries nor with each other
(numba's cache index does not key on such flags).
"""

from __future__ import annotations

import types
from typing import Any

from numba import njit
from numba.core.caching import NullCache
from numba.core.dispatcher import Dispatcher

#: packages whose modules are re-bound (numpy and numba's own modules are left alone)
_PACKAGES = ("bot.", "strategies.", "backtests.")
#: packages whose lean variants are inlined into their lean callers (module docstring)
_INLINED = ("bot.execution.", "bot.mechanics.", "bot.risk.")
#: bytecode names of numpy calls that allocate an array: such a function keeps NRT
_ALLOCATING = frozenset({
    "zeros", "empty", "full", "ones", "array", "copy", "zeros_like", "empty_like",
    "full_like", "ones_like", "arange", "concatenate", "linspace", "cumsum", "sort",
    "argsort", "where", "asarray", "ascontiguousarray", "stack", "column_stack", "nonzero",
    "unique", "repeat", "tile", "diff", "flatnonzero", "searchsorted_alloc", "geomspace"})

_memo: dict[tuple[int, bool | None], Any] = {}
_modules: dict[str, types.ModuleType] = {}


def _ours(module_name: str) -> bool:
    return module_name.startswith(_PACKAGES)


def _rebind(value: Any) -> Any:
    """A dispatcher -> its lean variant; a module of ours -> a copy whose dispatchers are
    lean; anything else unchanged."""
    if isinstance(value, Dispatcher) and _ours(getattr(value.py_func, "__module__", "")):
        return _lean(value)
    if isinstance(value, types.ModuleType) and _ours(value.__name__):
        return _lean_module(value)
    return value


def _lean_module(mod: types.ModuleType) -> types.ModuleType:
    proxy = _modules.get(mod.__name__)
    if proxy is None:
        proxy = types.ModuleType(mod.__name__, mod.__doc__)
        _modules[mod.__name__] = proxy           # before filling it: import cycles
        for k, v in vars(mod).items():
            setattr(proxy, k, _rebind(v) if isinstance(v, Dispatcher) else v)
    return proxy


def _inlined(py: Any) -> bool:
    return py.__module__.startswith(_INLINED)


def lean(f: Dispatcher) -> Dispatcher:
    """The lean compilation of the njit dispatcher `f` (module docstring); memoised. `f`
    is a loop's root, called from Python: the only lean variant compiled with a Python
    entry point. An inlined step function (`_INLINED`) is refused as a root (ValueError)
    rather than crash when called."""
    if _inlined(f.py_func):
        raise ValueError(f"{f.py_func.__qualname__}: its lean variant is inlined into lean "
                         "callers only; make the loop that calls it lean")
    return _lean(f, root=True)


def _lean(f: Dispatcher, root: bool = False) -> Dispatcher:
    got = _memo.get((id(f), None))          # `f` is itself a lean variant
    if got is None:
        got = _memo.get((id(f), root))
    if got is not None:
        return got
    py = f.py_func
    code = py.__code__
    g = dict(py.__globals__)
    fn = types.FunctionType(code, g, py.__name__, py.__defaults__, py.__closure__)
    fn.__kwdefaults__ = py.__kwdefaults__
    inline = _inlined(py)
    fn.__qualname__ = py.__qualname__ + ("__lean_inl" if inline else
                                         "__lean" if root else "__lean_sub")
    fn.__module__ = py.__module__
    fn.__doc__ = py.__doc__
    opts = dict(f.targetoptions)
    opts.pop("nopython", None)
    opts["cache"] = not isinstance(f._cache, NullCache)     # cached when the original is
    # explicit either way: numba lets a callee inherit the caller's NRT flag when unset
    opts["_nrt"] = bool(_ALLOCATING.intersection(code.co_names))
    opts["forceinline"] = inline            # explicit too: a callee inherits it when unset
    # only a root is called from Python: a callee needs no Python / C entry points
    opts["no_cpython_wrapper"] = not root
    opts["no_cfunc_wrapper"] = not root
    out = njit(**opts)(fn)
    _memo[(id(f), root)] = out
    _memo[(id(out), None)] = out            # re-binding a lean variant keeps it
    for name in code.co_names:               # re-bind the callees it can reach
        if name in g:
            g[name] = _rebind(g[name])
    return out
