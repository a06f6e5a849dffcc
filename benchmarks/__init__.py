"""Benchmarks: run from the repository root as ``python -m benchmarks.NAME`` (or
``PYTHONPATH=. python benchmarks/NAME.py``); each writes its table under ``results/``."""
