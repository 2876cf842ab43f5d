"""A small seeded random generator for numba kernels (splitmix64).

State is a one-element uint64 array owned by the caller, so kernels stay pure (no global
RNG state) and a seed gives the same stream on every machine: only integer arithmetic and
IEEE operations are involved.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO53 = 1.0 / 9007199254740992.0


def make_state(seed: int) -> np.ndarray:
    """RNG state for `seed` (any non-negative int)."""
    return np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)


@njit(cache=True)
def next_u64(state: np.ndarray) -> np.uint64:
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def uniform(state: np.ndarray) -> float:
    """Uniform on [0, 1)."""
    return float(next_u64(state) >> np.uint64(11)) * _TWO53


@njit(cache=True)
def normal(state: np.ndarray) -> float:
    """Standard normal (Box-Muller, one draw per call)."""
    u1 = 1.0 - uniform(state)
    u2 = uniform(state)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@njit(cache=True)
def poisson(state: np.ndarray, lam: float) -> int:
    """Poisson count; Knuth's method for small means, a rounded normal above 30."""
    if lam <= 0.0:
        return 0
    if lam > 30.0:
        k = int(np.floor(lam + np.sqrt(lam) * normal(state) + 0.5))
        return k if k > 0 else 0
    limit = np.exp(-lam)
    k = 0
    p = uniform(state)
    while p > limit:
        k += 1
        p *= uniform(state)
    return k
