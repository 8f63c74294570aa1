-- lsqd store, version 4: users and their API tokens, and the owner of every
-- job, model and dataset. A token is kept as the SHA-256 of its text only;
-- `lsqd token create` prints the text once. User 1, "local", owns what lsqd
-- made with authentication off (and everything made before this version);
-- it is an admin and takes no tokens. Version 1's table of per-job worker
-- tokens was never used and is replaced.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    admin       INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    created_at  REAL NOT NULL
);
INSERT INTO users (id, name, admin, created_at) VALUES (1, 'local', 1, unixepoch());

DROP TABLE tokens;
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    sha256      TEXT NOT NULL UNIQUE,         -- hex SHA-256 of the token's text
    created_at  REAL NOT NULL,
    last_used   REAL,
    revoked_at  REAL                          -- NULL while the token is valid
);

-- Users are never deleted, so the owner columns carry no REFERENCES (SQLite
-- refuses one with a non-NULL default on ALTER TABLE).
ALTER TABLE jobs ADD COLUMN owner_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE models ADD COLUMN owner_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE datasets ADD COLUMN owner_id INTEGER NOT NULL DEFAULT 1;
CREATE INDEX jobs_owner ON jobs(owner_id, id);
