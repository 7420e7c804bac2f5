-- A JSON value's canonical text, as engine/core/canonical.py writes it: object keys sorted
-- by code point (UTF-8 byte order, hence COLLATE "C"), no whitespace, strings escaped as
-- jsonb does (the same escapes as Python's json with ensure_ascii=False). Numbers keep
-- jsonb's text: a number Python would print differently (1e2, which Python reads as
-- 100.0) gives another hash, so a match is proof and a mismatch is worth a look.
CREATE OR REPLACE FUNCTION warden.canonical_json(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'object' THEN '{' || coalesce((
            SELECT string_agg(to_json(e.key)::text || ':' || warden.canonical_json(e.value), ','
                              ORDER BY e.key COLLATE "C")
              FROM jsonb_each(v) AS e), '') || '}'
        WHEN 'array' THEN '[' || coalesce((
            SELECT string_agg(warden.canonical_json(e.value), ',' ORDER BY e.n)
              FROM jsonb_array_elements(v) WITH ORDINALITY AS e(value, n)), '') || ']'
        ELSE v::text
    END
$$;
