"""Training: the lab's RunnerV3 (`Runner`), the accuracy metric, plots and checkpoints."""
