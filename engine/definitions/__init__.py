"""Workflow definitions: parsing and validating the YAML/JSON documents, templates,
the step graph, the pure DAG logic (what a run does next) and the stored versions.

May import ``engine.core``, ``engine.store`` and ``engine.process``.
"""
