-- rpod catalog, version 2: operations keep what a resumed poll needs; artifacts are found by name.

-- Looking up an artifact by name (unique backup names, reconciliation).
CREATE INDEX backups_by_artifact ON backups (target, artifact);

-- When the operation was accepted and the schedule slot it serves, so a resumed operation can finish the record
-- exactly as the original attempt would have.
ALTER TABLE operations ADD COLUMN slot_at INTEGER;
ALTER TABLE operations ADD COLUMN polls INTEGER NOT NULL DEFAULT 0;

-- The protected resource's etag when its backup completed (API Management).
ALTER TABLE backups ADD COLUMN etag TEXT;
