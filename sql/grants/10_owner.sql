-- warden_owner owns the schema and every object in it; it is used for migrations only.
-- Not a superuser: the SECURITY DEFINER worker functions run with its rights, which are
-- exactly warden's tables, and no role an application logs in as owns a table (an owner
-- could disable the append-only triggers or rewrite rows at will).
DO $owner$
DECLARE
    v_object record;
BEGIN
    EXECUTE 'ALTER SCHEMA warden OWNER TO warden_owner';
    -- the partitions' schema: no USAGE for anyone else (sql/schema/95_retention.sql)
    EXECUTE 'ALTER SCHEMA warden_partitions OWNER TO warden_owner';
    FOR v_object IN
        SELECT format('ALTER TABLE warden.%I OWNER TO warden_owner', c.relname) AS stmt
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'warden'::regnamespace AND c.relkind IN ('r', 'p', 'v')
        UNION ALL
        SELECT format('ALTER FUNCTION warden.%I(%s) OWNER TO warden_owner', p.proname,
                      pg_catalog.pg_get_function_identity_arguments(p.oid))
          FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'warden'::regnamespace
        UNION ALL
        SELECT format('ALTER TYPE warden.%I OWNER TO warden_owner', t.typname)
          FROM pg_catalog.pg_type t
         WHERE t.typnamespace = 'warden'::regnamespace AND t.typtype = 'e'
    LOOP
        EXECUTE v_object.stmt;
    END LOOP;
END $owner$;
-- Functions created later by the owner are not executable by everyone (PostgreSQL's
-- default): each revision grants what it means to. (Global, not IN SCHEMA: a per-schema
-- default can only add to the global one, never take PUBLIC's EXECUTE away.)
ALTER DEFAULT PRIVILEGES FOR ROLE warden_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
