-- Two-person approvals, no self-approval, and the fingerprint of the exact call a ticket holds.
-- The approvals so far live on the ticket row itself, so that one conditional UPDATE (which
-- locks and re-reads the row) both counts a vote and decides: two clicks in the same instant
-- serialise on the row, and neither can miss the other's vote.
ALTER TABLE tickets
    ADD COLUMN approvals_needed  integer NOT NULL DEFAULT 1 CHECK (approvals_needed >= 1),
    ADD COLUMN approved_by_ids   text[]  NOT NULL DEFAULT '{}',
    ADD COLUMN approved_by_names text[]  NOT NULL DEFAULT '{}',
    ADD COLUMN owner             text,
    ADD COLUMN fingerprint       text;

-- Every vote that counted (who, what, when), written by the same statement as the ticket change.
CREATE TABLE ticket_votes (
    ticket_id  uuid        NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    user_id    text        NOT NULL,
    user_name  text        NOT NULL,
    vote       text        NOT NULL CHECK (vote IN ('approve', 'deny')),
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ticket_id, user_id, vote)
);
