-- lsqd store, version 2: uploaded models (ONNX files, validated at upload;
-- the file is DATA/models/ID.onnx) and the model a job was submitted with.
CREATE TABLE models (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,               -- the upload's name (?name=)
    bytes       INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    summary     TEXT NOT NULL,               -- JSON: input, classes, layers, parameters, ...
    created_at  REAL NOT NULL
);

ALTER TABLE jobs ADD COLUMN model_id INTEGER REFERENCES models(id) ON DELETE SET NULL;
CREATE INDEX jobs_model ON jobs(model_id) WHERE model_id IS NOT NULL;
