-- The partitions of this month and the next three (docs/dba.md, "Partitions and
-- retention"), created by the owner's function once the owner owns everything.
SELECT warden.ensure_partitions(3);
