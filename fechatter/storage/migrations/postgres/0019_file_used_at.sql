-- When a reference to an upload (a message's files, an avatar) was last checked
-- (storage/files.py ``claim``). The collector keeps an upload used within its grace, so one
-- checked just before the grace ran out is not deleted before the message that names it
-- commits. NULL: never referenced (rows from before this migration too: their created_at
-- governs, as it did).
ALTER TABLE files ADD COLUMN used_at timestamptz;
