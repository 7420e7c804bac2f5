"""Runs as users see them: starting (with the submit gate), reruns, cancellation,
reading runs, jobs and timelines, and the documents the API and CLI print.

May import every layer below it: ``core``, ``store``, ``process``, ``definitions``,
``governance``.
"""
