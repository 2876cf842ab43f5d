"""Signals: liquidation heatmap, clusters, positioning, cascade and exhaustion detectors."""
