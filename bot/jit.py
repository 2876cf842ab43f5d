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
never frees it; `lean(bot.risk.engine.evaluate)` does, via `new_risk_state`): only
functions whose whole tree passes arrays in, never out, may be made lean.

Lean variants are cached on disk like the originals (`cache=True`) under their own name
(`<qualname>__lean`), so they never collide with the originals' cache entries.
"""

from __future__ import annotations

import types
from typing import Any

from numba import njit
from numba.core.caching import NullCache
from numba.core.dispatcher import Dispatcher

#: packages whose modules are re-bound (numpy and numba's own modules are left alone)
_PACKAGES = ("bot.", "strategies.", "backtests.")
#: bytecode names of numpy calls that allocate an array: such a function keeps NRT
_ALLOCATING = frozenset({
    "zeros", "empty", "full", "ones", "array", "copy", "zeros_like", "empty_like",
    "full_like", "ones_like", "arange", "concatenate", "linspace", "cumsum", "sort",
    "argsort", "where", "asarray", "ascontiguousarray", "stack", "column_stack", "nonzero",
    "unique", "repeat", "tile", "diff", "flatnonzero", "searchsorted_alloc", "geomspace"})

_memo: dict[int, Any] = {}
_modules: dict[str, types.ModuleType] = {}


def _ours(module_name: str) -> bool:
    return module_name.startswith(_PACKAGES)


def _rebind(value: Any) -> Any:
    """A dispatcher -> its lean variant; a module of ours -> a copy whose dispatchers are
    lean; anything else unchanged."""
    if isinstance(value, Dispatcher) and _ours(getattr(value.py_func, "__module__", "")):
        return lean(value)
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


def lean(f: Dispatcher) -> Dispatcher:
    """The lean compilation of the njit dispatcher `f` (module docstring); memoised."""
    got = _memo.get(id(f))
    if got is not None:
        return got
    py = f.py_func
    code = py.__code__
    g = dict(py.__globals__)
    fn = types.FunctionType(code, g, py.__name__, py.__defaults__, py.__closure__)
    fn.__kwdefaults__ = py.__kwdefaults__
    fn.__qualname__ = py.__qualname__ + "__lean"
    fn.__module__ = py.__module__
    fn.__doc__ = py.__doc__
    opts = dict(f.targetoptions)
    opts.pop("nopython", None)
    opts["cache"] = not isinstance(f._cache, NullCache)     # cached when the original is
    # explicit either way: numba lets a callee inherit the caller's NRT flag when unset
    opts["_nrt"] = bool(_ALLOCATING.intersection(code.co_names))
    out = njit(**opts)(fn)
    _memo[id(f)] = out
    _memo[id(out)] = out
    for name in code.co_names:               # re-bind the callees it can reach
        if name in g:
            g[name] = _rebind(g[name])
    return out
