-- Agents with OAuth access tokens: the issuer that vouched for the principal, and (on tickets)
-- the claims and scopes of the token that the holding rule looked at, shown to approvers.
-- NULL for static-token agents and for rows written before this migration.
ALTER TABLE tickets ADD COLUMN principal_issuer text;
ALTER TABLE tickets ADD COLUMN principal_claims jsonb;
ALTER TABLE audit_log ADD COLUMN principal_issuer text;
