-- The revision (content hash) of the policy that decided a call, on its ticket and audit row,
-- so that a decision can be traced to the exact policy in force after a live reload.
ALTER TABLE tickets ADD COLUMN policy_revision text;
ALTER TABLE audit_log ADD COLUMN policy_revision text;
