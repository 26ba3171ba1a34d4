-- rpod catalog, version 5: restores (asked for, standby syncs and drills), each with what it restored, where to,
-- how long it took and what it found; and what a backup's provider read of the source's content when the backup
-- completed (a drill compares the restored destination with it).
ALTER TABLE backups ADD COLUMN content TEXT;

CREATE TABLE restores (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    target        TEXT NOT NULL,
    backup_id     INTEGER NOT NULL REFERENCES backups (id),
    -- The `restore_into` name; NULL: the target's own system (its service, or its restore_command).
    into_name     TEXT,
    -- What was restored into, for operators: a service's resource path, or the command that read the stream.
    destination   TEXT NOT NULL,
    trigger       TEXT NOT NULL CHECK (trigger IN ('manual', 'standby', 'drill')),
    -- running -> succeeded | failed | timed_out | interrupted.
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'timed_out', 'interrupted')),
    requested_at  INTEGER NOT NULL,
    -- When the system accepted the restore (or rpod began feeding the stream).
    accepted_at   INTEGER,
    completed_at  INTEGER,
    -- accepted_at to completed_at of a successful restore, in milliseconds: the measured restore time.
    duration_ms   INTEGER,
    -- The long-running operation being followed (its provider's own JSON), while running.
    handle        TEXT,
    deadline_at   INTEGER NOT NULL,
    -- JSON array: what the restore did not carry over, for an operator to re-apply.
    warnings      TEXT,
    -- What verification found (drills).
    verified      TEXT,
    error_code    TEXT,
    error_message TEXT
);

CREATE INDEX restores_by_target ON restores (target, id);
