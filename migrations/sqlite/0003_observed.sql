-- rpod catalog, version 3: nothing counts as restorable until rpod has seen it (docs/operations.md, "What
-- restorable means").

-- When rpod verified a discovered artifact (size, and for command artifacts a complete zstd stream). A
-- `discovered` backup is restorable only once this is set; rpod's own `succeeded` backups were seen in storage
-- when they finished.
ALTER TABLE backups ADD COLUMN verified_at INTEGER;

-- Artifacts imported by an earlier rpod were neither verified nor dated by their names: they stop counting as
-- restorable until the next reconciliation has checked them again.
UPDATE backups
   SET error_code = 'Unverified',
       error_message = 'imported before rpod verified discovered artifacts; checked again at the next reconciliation'
 WHERE status = 'discovered';

-- One row, written by readiness checks: proves the catalog accepts writes.
CREATE TABLE liveness (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    at            INTEGER NOT NULL
);
