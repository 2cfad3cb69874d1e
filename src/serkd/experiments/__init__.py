"""Experiments over runs: reports (and later grids and searches)."""
