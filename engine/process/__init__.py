"""Process plumbing shared by long-running processes: wake-ups and polling loops,
logging and signal set-up, the embedded-database choice, and the Prometheus metrics.

May import ``engine.core`` and ``engine.store`` only.
"""
