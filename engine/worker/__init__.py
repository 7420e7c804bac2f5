"""The Python worker: claims jobs through the SQL job protocol, runs handlers,
heartbeats, checkpoints and completes them in batches.

May import ``engine.core``, ``engine.store`` and ``engine.process`` only: a worker is a
client of the SQL functions, exactly like a worker written in another language.
"""
