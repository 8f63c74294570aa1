-- lsqd store, version 5: a failed job's error keeps the field its error
-- event named ("model.input", "dataset.cache"), shown as error.field.
ALTER TABLE jobs ADD COLUMN error_field TEXT;
