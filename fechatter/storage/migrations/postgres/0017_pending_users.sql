-- Imported users never activated (docs/archive.md "Users"): status 'Pending'.
--
-- Before this migration an import created its new users 'Suspended' with the password hash
-- '!imported' (one no verifier accepts), indistinguishable by status from users an admin
-- suspended. A user still holding that hash has never had a password, so it was never
-- activated: it becomes 'Pending', which a reset link or an email-bound invite activates
-- (an admin-suspended user is never activated by either). status has no CHECK constraint.
UPDATE users SET status = 'Pending' WHERE status = 'Suspended' AND password_hash = '!imported';
