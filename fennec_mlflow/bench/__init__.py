"""Benchmarks: public tables, the synthetic end-to-end benchmark, evaluation runs and Optuna tuning.

Nothing in the package imports this layer except the CLI.
"""
