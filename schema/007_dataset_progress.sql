-- lsqd store, version 7: how far a registering dataset has come, written by
-- the registrar from the fetch and from the importer's progress lines (a
-- few times a second at most) and kept once it is ready or failed: the
-- phase ('fetching', 'decoding', 'writing', 'samples'), its count done and
-- its total (NULL while not known).
ALTER TABLE datasets ADD COLUMN progress_phase TEXT;
ALTER TABLE datasets ADD COLUMN progress_done INTEGER;
ALTER TABLE datasets ADD COLUMN progress_total INTEGER;
