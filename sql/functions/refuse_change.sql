-- The trigger function of every append-only table (sql/triggers/append_only.sql): the
-- timeline, policy decisions and activations, and the content-addressed snapshots.
CREATE OR REPLACE FUNCTION warden.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'warden.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'WD010';
END $$;
