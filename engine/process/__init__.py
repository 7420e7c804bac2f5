"""Process plumbing shared by long-running processes: wake-ups and polling loops,
logging and signal set-up, the embedded-database choice, the Prometheus metrics and the
OpenTelemetry traces (imported only when traces are on).

May import ``engine.core`` and ``engine.store`` only.
"""
