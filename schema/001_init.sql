-- lsqd store, version 1: jobs, their events, metric points and artifacts,
-- registered datasets and per-job worker tokens.
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued','running','succeeded','failed','cancelled')),
    spec            TEXT NOT NULL,          -- the normalised spec (engine/spec.h)
    created_at      REAL NOT NULL,          -- unix seconds
    started_at      REAL,
    finished_at     REAL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    last_seq        INTEGER NOT NULL DEFAULT 0, -- highest stored event seq
    progress        TEXT,                   -- latest progress event (JSON)
    last_epoch      TEXT,                   -- latest epoch event (JSON)
    test_acc        REAL,
    error_code      TEXT,
    error_message   TEXT,
    exit_status     INTEGER
);
CREATE INDEX jobs_state ON jobs(state, id);

CREATE TABLE events (
    job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,               -- 1, 2, 3 ... per job, no gaps
    type    TEXT NOT NULL,
    json    TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

CREATE TABLE metrics (
    job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,               -- the event it came from
    kind    TEXT NOT NULL,                  -- 'progress' | 'epoch'
    phase   TEXT,
    epoch   INTEGER,
    step    INTEGER,
    name    TEXT NOT NULL,                  -- 'loss', 'test_acc', 'step_size.conv2.weight' ...
    value   REAL NOT NULL
);
CREATE INDEX metrics_job ON metrics(job_id, seq);

CREATE TABLE artifacts (
    job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,                  -- a file name inside the job folder
    bytes   INTEGER NOT NULL,
    sha256  TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;

CREATE TABLE datasets (
    name    TEXT PRIMARY KEY,
    path    TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE tokens (
    token   TEXT PRIMARY KEY,
    job_id  INTEGER REFERENCES jobs(id) ON DELETE CASCADE,
    created_at REAL NOT NULL
);
