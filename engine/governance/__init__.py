"""Who and what may act: policy bundles and their evaluation, the decisions every
gate records, approvals and their decisions, API keys and principals.

May import ``engine.core``, ``engine.store``, ``engine.process`` and ``engine.definitions``.
"""
