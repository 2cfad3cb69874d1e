"""Training students per fold: the loop, metrics, checkpoints and run provenance."""
