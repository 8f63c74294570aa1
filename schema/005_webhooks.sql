-- lsqd store, version 5: webhooks. A job whose spec has a notify_url gets a
-- delivery row the moment it reaches a final state (the trigger below, in
-- the same transaction as the state change, so that no end is missed by a
-- crash); lsqd's webhook thread POSTs it, records every attempt, and picks
-- up pending deliveries again after a restart. Secrets sign the bodies
-- (HMAC-SHA256), one per user (users.id; user 1, "local", owns what an lsqd
-- without authentication makes).
CREATE TABLE webhook_secrets (
    owner_id    INTEGER PRIMARY KEY REFERENCES users(id),
    secret      TEXT NOT NULL,              -- 64 hex digits from getrandom(2)
    created_at  REAL NOT NULL
);

CREATE TABLE webhook_deliveries (
    job_id      INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    owner_id    INTEGER NOT NULL DEFAULT 1, -- whose secret signs it: the job's owner
    url         TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending','delivered','failed')),
    next_at     REAL NOT NULL,              -- unix seconds of the next attempt
    created_at  REAL NOT NULL
);
CREATE INDEX webhook_pending ON webhook_deliveries(next_at) WHERE state = 'pending';

CREATE TABLE webhook_attempts (
    job_id      INTEGER NOT NULL REFERENCES webhook_deliveries(job_id) ON DELETE CASCADE,
    n           INTEGER NOT NULL,           -- 1, 2, 3 ...
    at          REAL NOT NULL,
    status      INTEGER,                    -- the HTTP status; NULL when none came
    error       TEXT,                       -- why it failed before a status; NULL otherwise
    PRIMARY KEY (job_id, n)
) WITHOUT ROWID;

CREATE TRIGGER jobs_notify AFTER UPDATE OF state ON jobs
WHEN NEW.state IN ('succeeded','failed','cancelled') AND OLD.state <> NEW.state
     AND json_extract(NEW.spec, '$.notify_url') IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO webhook_deliveries (job_id, owner_id, url, next_at, created_at)
    VALUES (NEW.id, NEW.owner_id, json_extract(NEW.spec, '$.notify_url'),
            (julianday('now') - 2440587.5) * 86400.0, (julianday('now') - 2440587.5) * 86400.0);
END;
