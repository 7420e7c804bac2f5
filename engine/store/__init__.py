"""The engine's database layer: the only package that imports psycopg.

`connection` holds the pool, transactions and error translation; the entity modules
(`workflows`, `runs`, `steps`, `jobs`, `approvals`, `notifications`, `timeline`) each wrap
the named queries of the matching `sql/queries/*.sql` file, one typed function per query.
"""

from engine.store.connection import Conn, Database, connect, savepoint

__all__ = ["Conn", "Database", "connect", "savepoint"]
