-- rpod catalog, version 6: every backup names the replica that ran it and the schedule slot it served
-- (docs/high-availability.md). A single node names itself too.
ALTER TABLE backups ADD COLUMN replica TEXT;
ALTER TABLE backups ADD COLUMN slot_at INTEGER;

-- Which slot a target's backups served, for "was this slot run, and how often".
CREATE INDEX backups_by_slot ON backups (target, slot_at) WHERE slot_at IS NOT NULL;
