-- rpod catalog on PostgreSQL, version 2: what several replicas agree on (docs/high-availability.md). Lease expiry
-- is the database's clock (TIMESTAMPTZ compared with now()), never a replica's.

-- Each replica that is running, as it last said so.
CREATE TABLE replicas (
    replica          TEXT PRIMARY KEY NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    seen_at          TIMESTAMPTZ NOT NULL
);

-- Who may work on a target, until when. Every taking of a lease raises its term; writes about the target carry
-- the term they were made under and are refused once it is no longer the lease's.
CREATE TABLE leases (
    target           TEXT PRIMARY KEY NOT NULL,
    owner            TEXT,
    term             BIGINT NOT NULL DEFAULT 0,
    expires_at       TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);
CREATE INDEX leases_by_owner ON leases (owner);

-- The replica that runs the cluster's singletons (pruning, reconciliation, expiry warnings), the same way.
CREATE TABLE leader (
    id               BIGINT PRIMARY KEY CHECK (id = 1),
    owner            TEXT,
    term             BIGINT NOT NULL DEFAULT 0,
    expires_at       TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);
INSERT INTO leader (id) VALUES (1);

-- Durable schedule ticks: the newest slot claimed for each target, and the term it was claimed under. A slot is
-- claimed by compare-and-set, so it runs once across all replicas.
ALTER TABLE target_state ADD COLUMN claimed_slot_at BIGINT;
ALTER TABLE target_state ADD COLUMN claimed_term BIGINT;
