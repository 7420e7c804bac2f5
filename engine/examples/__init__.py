"""The demo: the incident-remediation workflow and policy (YAML beside this file) and
the sample handlers its workers run (`engine.examples.handlers:handle`).

May import ``engine.worker`` (handlers are written against its ``Job``).
"""
