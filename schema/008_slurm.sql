-- lsqd store, version 8: jobs that run under Slurm (lsqd --executor slurm,
-- docs/cluster.md). A job keeps the id Slurm gave it while lsqd follows it,
-- so that a restarted lsqd finds it again with squeue/sacct, and how far
-- into the job's events file (DATA/jobs/ID/events.jsonl, written by the
-- worker on the shared folder) its events were stored: a restart reads on
-- from there, never storing an event twice.
ALTER TABLE jobs ADD COLUMN slurm_id TEXT;
ALTER TABLE jobs ADD COLUMN events_offset INTEGER NOT NULL DEFAULT 0;
-- The worker numbers its events (1, 2, 3 ...: the lines of events.jsonl);
-- worker_seq is the highest one stored, from the file or over HTTP
-- (POST /api/v1/jobs/{id}/events), so each is stored once whichever path
-- brings it first.
ALTER TABLE jobs ADD COLUMN worker_seq INTEGER NOT NULL DEFAULT 0;
-- The token a worker posts its job's events with: only its sha256 (hex).
CREATE TABLE job_tokens (
    job_id      INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    sha256      TEXT NOT NULL,
    created_at  REAL NOT NULL
);
