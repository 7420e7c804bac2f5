-- The trigger function of every append-only table (sql/triggers/append_only.sql): the
-- timeline, policy decisions and activations, the content-addressed snapshots and the
-- archived runs. A partition (sql/schema/50_timeline.sql) is named by its parent table.
CREATE OR REPLACE FUNCTION warden.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'warden.% is append-only: % refused',
        (SELECT c.relname FROM pg_catalog.pg_class c
          WHERE c.oid = coalesce(pg_catalog.pg_partition_root(TG_RELID), TG_RELID)), TG_OP
        USING ERRCODE = 'WD010';
END $$;
