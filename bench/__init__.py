"""Warden's benchmark: `python bench/run.py [--quick]` prints one JSON document."""
