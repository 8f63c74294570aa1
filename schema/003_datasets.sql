-- lsqd store, version 3: datasets are objects that lsqd registers itself
-- (an upload, a URL it fetched, or a folder of --datasets-root), decoded into
-- a cache under DATA/datasets/ID/. It replaces version 1's table of folder
-- paths that clients registered, which made lsqd open any folder a client
-- named. A job records the dataset it trains on, so that the dataset cannot
-- be deleted while the job is queued or running.
DROP TABLE datasets;
CREATE TABLE datasets (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL,
    source        TEXT NOT NULL CHECK (source IN ('upload','url','root')),
    origin        TEXT,                     -- the URL, or the folder's name under the root
    options       TEXT NOT NULL DEFAULT '{}', -- import options (JSON): format, size, ...
    state         TEXT NOT NULL DEFAULT 'registering'
                  CHECK (state IN ('registering','ready','failed')),
    bytes         INTEGER,                  -- the uploaded or fetched file
    sha256        TEXT,
    summary       TEXT,                     -- JSON: `lsq dataset import --json`
    error_code    TEXT,
    error_message TEXT,
    created_at    REAL NOT NULL,
    finished_at   REAL
);
CREATE UNIQUE INDEX datasets_root ON datasets(origin) WHERE source = 'root';
CREATE INDEX datasets_state ON datasets(state) WHERE state = 'registering';

ALTER TABLE jobs ADD COLUMN dataset_id INTEGER REFERENCES datasets(id) ON DELETE SET NULL;
CREATE INDEX jobs_dataset ON jobs(dataset_id) WHERE dataset_id IS NOT NULL;
