"""The `gfa-keras` command (also `python -m gfa_keras`): train, evaluate, tune, report.

The top of the architecture: it may import every other part, and nothing imports it.
"""
from gfa_keras.cli.commands import main

__all__ = ["main"]
