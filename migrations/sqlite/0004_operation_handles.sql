-- rpod catalog, version 4: a saved operation is an opaque record that its provider owns (JSON: how to poll it,
-- where, and when next), with the kind of operation it is. Rows saved as a Location URL are carried over.
CREATE TABLE operations_v4 (
    backup_id     INTEGER PRIMARY KEY NOT NULL REFERENCES backups (id),
    kind          TEXT NOT NULL DEFAULT 'backup' CHECK (kind IN ('backup', 'restore')),
    -- What the provider needs to resume polling, e.g. {"pattern":"location","url":"...","next_poll_at":...}.
    handle        TEXT NOT NULL,
    -- What was asked, for operators (never secrets).
    request       TEXT,
    deadline_at   INTEGER NOT NULL,
    -- The schedule slot it serves.
    slot_at       INTEGER
);

INSERT INTO operations_v4 (backup_id, kind, handle, request, deadline_at, slot_at)
SELECT backup_id, 'backup',
       json_object('pattern', 'location', 'url', url, 'next_poll_at', next_poll_at, 'polls', polls),
       request, deadline_at, slot_at
  FROM operations;

DROP TABLE operations;
ALTER TABLE operations_v4 RENAME TO operations;
