-- Imported users never activated (docs/archive.md "Users"): status 'Pending'.
--
-- Before this migration an import created its new users 'Suspended' with the password hash
-- '!imported' (one no verifier accepts), indistinguishable by status from users an admin
-- suspended. A user still holding that hash has never had a password, so it was never
-- activated: it becomes 'Pending', which a reset link or an email-bound invite activates
-- (an admin-suspended user is never activated by either). status has no CHECK constraint.
--
-- Except a user an admin ever suspended or reactivated (an admin_audit row, 0008/0015, with
-- action 'suspend' or 'reactivate' naming the user: details {"user_id": <id>}, target
-- 'user:<email>'): e.g. reactivated and suspended again, it still holds the importer's hash,
-- but its suspension is an admin's decision that no link or invite may undo.
UPDATE users SET status = 'Pending'
WHERE status = 'Suspended' AND password_hash = '!imported'
  AND NOT EXISTS (
    SELECT 1 FROM admin_audit a
    WHERE a.action IN ('suspend', 'reactivate')
      AND (a.details = '{"user_id": ' || users.id || '}' OR a.target = 'user:' || users.email)
  );
