"""A local Binance USD-M futures exchange (REST + websockets) that replays a dataset on a
simulated clock and trades through our mechanics (`bot.execution.kernel`), so real ccxt
clients can be exercised end to end without network. See docs/emulator.md."""
