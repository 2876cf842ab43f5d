"""Memory settings for a one-shot command's own process (`liqbot backtest`).

`skip_scipy_linalg()`: numba's CPU target, on its first compilation or first cached
function load, runs `numba.np.linalg.ensure_blas`: `import scipy.linalg.cython_blas`
(and, on the first linear algebra, `cython_lapack`). Importing a submodule first runs its
package's `__init__`, and scipy.linalg's imports all of scipy.linalg, scipy's array-API
layer, numpy.f2py and numpy.testing (unittest): ~15 MB resident and ~0.1 s in a process
that does no linear algebra in Python. It imports the two Cython modules (numba needs only
them: its compiled code takes the BLAS / LAPACK function pointers from their
`__pyx_capi__`) under a bare placeholder package, then removes the placeholder: a later
`import scipy.linalg` runs the real package as usual and finds the two modules loaded. One
difference remains: that later `scipy.linalg` module has no `cython_blas` / `cython_lapack`
ATTRIBUTE (a submodule already in `sys.modules` is not re-attached to a package imported
after it); `import scipy.linalg.cython_blas [as x]` and `from scipy.linalg import
cython_blas` work. Hence only in a command's own process, never on import of a library
module.

`arrow_system_allocator()`: Arrow's C++ default memory pool (mimalloc or jemalloc) keeps
~13 MB of the Parquet decoder's freed buffers for reuse (`release_unused` returns only part
of them); the system allocator returns them. Arrow reads its choice once, from the
environment, when pyarrow first allocates: set before pyarrow is imported.

`return_freed_memory()`: glibc malloc serves a block of 128 KiB or more from its own
mapping, returned to the OS when freed, but raises that threshold to the size of each
such block freed (up to 32 MB): after the first 4 MB column is freed, every later array
of up to 4 MB comes from the heap, whose freed space the process keeps. Fixing the
threshold at 128 KiB keeps freed arrays (and the Parquet reader's buffers) out of the
peak resident set.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import sys
import types

SCIPY_BLAS = ("scipy.linalg.cython_blas", "scipy.linalg.cython_lapack")
#: glibc mallopt parameter number and the value fixed (glibc's default, 128 KiB)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def skip_scipy_linalg() -> bool:
    """Import numba's two scipy.linalg modules without scipy.linalg's `__init__` (see the
    module docstring). True when they are loaded that way now; False (nothing changed)
    when scipy is absent, scipy.linalg or the modules are loaded already, or anything in
    the way fails (numba then imports scipy.linalg itself, as without this)."""
    if "scipy.linalg" in sys.modules or any(m in sys.modules for m in SCIPY_BLAS):
        return False
    try:
        spec = importlib.util.find_spec("scipy.linalg")    # imports `scipy` only
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    stub = types.ModuleType("scipy.linalg")
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules["scipy.linalg"] = stub
    try:
        for name in SCIPY_BLAS:
            importlib.import_module(name)
    except Exception:  # noqa: BLE001 - any failure: leave it to numba's own import
        for name in SCIPY_BLAS:
            sys.modules.pop(name, None)
        return False
    finally:
        if sys.modules.get("scipy.linalg") is stub:
            del sys.modules["scipy.linalg"]
    return True


def arrow_system_allocator() -> bool:
    """Arrow's default memory pool: the system allocator (see the module docstring), unless
    the environment names one (ARROW_DEFAULT_MEMORY_POOL) or pyarrow is imported already.
    True when set now."""
    if "pyarrow" in sys.modules or "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return False
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    return True


def return_freed_memory() -> bool:
    """Fix glibc malloc's mmap threshold at 128 KiB (see the module docstring). True when
    set; False where there is no glibc `mallopt` (macOS, Windows, musl's no-op)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
