"""Training: the lab's RunnerV3 (`Runner`), the accuracy metric, plots, checkpoints (every field
checked on load), run directories (one run each, locked while written), resume and signals."""
