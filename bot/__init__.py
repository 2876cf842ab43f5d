"""liqbot: perpetual-futures trading with liquidation-aware risk controls."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("liqbot")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+src"
