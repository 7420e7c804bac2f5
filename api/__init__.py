"""The REST API (Starlette) over the engine: see the REST API issue; no SQL here."""
