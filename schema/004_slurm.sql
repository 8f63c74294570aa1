-- lsqd store, version 4: jobs that run under Slurm (lsqd --executor slurm,
-- docs/cluster.md). A job keeps the id Slurm gave it while lsqd follows it,
-- so that a restarted lsqd finds it again with squeue/sacct, and how far
-- into the job's events file (DATA/jobs/ID/events.jsonl, written by the
-- worker on the shared folder) its events were stored: a restart reads on
-- from there, never storing an event twice.
ALTER TABLE jobs ADD COLUMN slurm_id TEXT;
ALTER TABLE jobs ADD COLUMN events_offset INTEGER NOT NULL DEFAULT 0;
