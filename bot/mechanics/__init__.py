"""Perpetual-futures rules as pure numba kernels (the one place liquidation, funding and fee
math lives). This package is the leaf of the dependency graph: it imports nothing from bot."""
