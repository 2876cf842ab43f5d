"""The numba backtest engine (issue 5)."""
