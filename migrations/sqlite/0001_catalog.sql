-- rpod catalog, version 1. Times are Unix milliseconds (UTC).

-- Per-target scheduler state that must survive restarts.
CREATE TABLE target_state (
    target        TEXT PRIMARY KEY NOT NULL,
    -- Every schedule slot at or before this instant has been used (DESIGN §2.4).
    last_slot_at  INTEGER,
    -- Provider-specific change-detection watermark (DESIGN §2.5).
    change_watermark TEXT,
    updated_at    INTEGER NOT NULL
);

-- One row per backup attempt.
CREATE TABLE backups (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    target        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    trigger       TEXT NOT NULL CHECK (trigger IN ('schedule', 'rpo', 'change', 'catch_up', 'manual', 'discovered')),
    -- running -> succeeded | failed | timed_out | interrupted; succeeded -> pruned | missing.
    status        TEXT NOT NULL CHECK (status IN
                    ('running', 'succeeded', 'failed', 'timed_out', 'interrupted', 'pruned', 'missing', 'discovered')),
    attempt       INTEGER NOT NULL DEFAULT 1,
    requested_at  INTEGER NOT NULL,
    -- Recovery point time: the instant whose state the backup captures.
    accepted_at   INTEGER,
    completed_at  INTEGER,
    expires_at    INTEGER,
    storage       TEXT,
    artifact      TEXT,
    size_bytes    INTEGER,
    sha256        TEXT,
    sku           TEXT,
    error_code    TEXT,
    error_message TEXT,
    first_change_at INTEGER,
    expiry_warned_at INTEGER,
    pruned_at     INTEGER
);

-- "Newest restorable per target" and "restorable until": restorable rows only, in O(log n).
CREATE INDEX backups_restorable_by_point ON backups (target, accepted_at)
    WHERE status IN ('succeeded', 'discovered');
CREATE INDEX backups_restorable_by_expiry ON backups (target, expires_at)
    WHERE status IN ('succeeded', 'discovered');
-- "Expired, not pruned".
CREATE INDEX backups_expiring ON backups (expires_at)
    WHERE status IN ('succeeded', 'discovered');
-- History listing and last attempt per target.
CREATE INDEX backups_by_target ON backups (target, id);
-- Rows a crash may leave behind.
CREATE INDEX backups_running ON backups (status) WHERE status = 'running';

-- Long-running provider operations (ARM), persisted before the first poll so a restart resumes them.
CREATE TABLE operations (
    backup_id     INTEGER PRIMARY KEY NOT NULL REFERENCES backups (id),
    url           TEXT NOT NULL,
    request       TEXT,
    next_poll_at  INTEGER NOT NULL,
    deadline_at   INTEGER NOT NULL
);

-- Who did what to which backup, and why (prunes, imports, interruptions).
CREATE TABLE audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    target        TEXT NOT NULL,
    backup_id     INTEGER REFERENCES backups (id),
    detail        TEXT NOT NULL
);
