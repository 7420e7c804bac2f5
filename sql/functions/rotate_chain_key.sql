-- Retires the active chain key and makes a new one; returns its key_id (`warden audit
-- rotate-key`; the first key is made by the migration that added the table). The key is
-- sha256 of four gen_random_uuid() (122 bits each from the server's strong random source,
-- the one pgcrypto's gen_random_bytes uses), so it never leaves the server; only its HMAC
-- pads are stored. The table lock orders concurrent rotations. Owner only.
CREATE OR REPLACE FUNCTION warden.rotate_chain_key(p_by text) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_key bytea;
    v_id  integer;
BEGIN
    LOCK TABLE warden.chain_keys IN SHARE ROW EXCLUSIVE MODE;
    v_key := sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text
                               || gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8'))
             || decode(repeat('00', 32), 'hex');
    UPDATE warden.chain_keys SET retired_at = now() WHERE retired_at IS NULL;
    INSERT INTO warden.chain_keys (k_ipad, k_opad, created_by)
    SELECT decode(string_agg(lpad(to_hex(get_byte(v_key, i) # 54), 2, '0'), '' ORDER BY i), 'hex'),
           decode(string_agg(lpad(to_hex(get_byte(v_key, i) # 92), 2, '0'), '' ORDER BY i), 'hex'),
           p_by
      FROM generate_series(0, 63) AS i
    RETURNING key_id INTO v_id;
    RETURN v_id;
END $$;
REVOKE EXECUTE ON FUNCTION warden.rotate_chain_key(text) FROM PUBLIC;
