"""Market data: containers, loaders, validation, datasets, synthetic cascades."""
