"""Foundations every other part of the engine stands on: the error tree, the Python
mirrors of the Postgres enums and the state machine, settings, canonical JSON and where
the packaged data files live.

Imports nothing from the rest of ``engine`` (the bottom layer; see docs/design.md,
"Layers").
"""
