-- Slack user groups as approvers. A ticket names the groups its rule listed; who is in them is
-- read from Slack by the notifier and kept here as one snapshot per group. The webhook never
-- calls Slack: the vote statement checks the clicker against the newest snapshot, and only one
-- younger than the webhook's maximum age counts (an old or missing snapshot refuses the click).
ALTER TABLE tickets
    ADD COLUMN approver_groups text[] NOT NULL DEFAULT '{}';

CREATE TABLE approver_group_members (
    group_id   text        PRIMARY KEY,
    users      text[]      NOT NULL,
    fetched_at timestamptz NOT NULL DEFAULT now()
);

-- The refresh loop asks which groups pending tickets name.
CREATE INDEX tickets_pending_groups ON tickets (created_at)
    WHERE status = 'pending' AND cardinality(approver_groups) > 0;
