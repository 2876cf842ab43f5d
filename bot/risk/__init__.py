"""Risk engine: one pure numba function from (signals, account, policy) to a decision."""
