-- name: schema_version_table_exists :one
-- Whether Alembic's version table exists: an unmigrated database has none, and
-- schema_revision below would fail on it. (Plain SQL on purpose: the embedded server
-- is built without libxml, so query_to_xml tricks are not available everywhere.)
SELECT to_regclass('public.warden_alembic_version') IS NOT NULL AS present;

-- name: schema_revision :one
-- The Alembic revision the database is at (ask schema_version_table_exists first).
SELECT version_num FROM public.warden_alembic_version;
