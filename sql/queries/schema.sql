-- name: schema_revision :one
-- The Alembic revision the database is at; NULL when it has no Warden schema yet.
-- query_to_xml defers the table reference, so an unmigrated database is not an error.
SELECT CASE WHEN to_regclass('public.warden_alembic_version') IS NULL THEN NULL
            ELSE (xpath('/row/version_num/text()',
                        query_to_xml('SELECT version_num FROM public.warden_alembic_version',
                                     false, true, '')))[1]::text
       END AS version_num;
