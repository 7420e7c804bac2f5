-- The database clock every lease, backoff, deadline and expiry is compared against
-- (warden.now(), sql/functions/now.sql). In production the table is empty and the clock is
-- the transaction's now(). Tests move time forward by writing the one row here instead of
-- sleeping; only the schema owner can write it, so no worker or engine session can bend
-- its own leases (a session setting would let any caller do that).
CREATE TABLE warden.clock (
    one    boolean  NOT NULL DEFAULT true PRIMARY KEY CHECK (one),
    shift  interval NOT NULL
);
