"""Training: the loop, its optimiser and schedule, and one run from config to result record."""

from qgoft_bench.train.run import run_experiment

__all__ = ["run_experiment"]
