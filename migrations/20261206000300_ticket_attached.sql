-- When a caller last started waiting on a ticket: its creation, or the newest retry that
-- reattached to it (on any gateway instance). A waiter that went away cancels the ticket only
-- if nobody attached after it did.
ALTER TABLE tickets ADD COLUMN attached_at timestamptz NOT NULL DEFAULT now();
