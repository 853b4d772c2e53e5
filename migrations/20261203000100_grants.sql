-- Standing grants ("Approve for 1 h"): an approval that lets later calls of the same principal,
-- tool and rule (and, for scope `arguments`, the same canonical request) pass until it expires.
--
-- What the message needs to offer a grant is stored on the ticket, so the notifier never reads
-- policy: the duration, the scope, and the hash of the rule as it was when the call was held.
ALTER TABLE tickets
    ADD COLUMN grant_for_secs  integer CHECK (grant_for_secs > 0),
    ADD COLUMN grant_scope     text    CHECK (grant_scope IN ('tool', 'arguments')),
    ADD COLUMN grant_rule_hash text,
    ADD CONSTRAINT tickets_grant_offer_whole CHECK (
        (grant_for_secs IS NULL) = (grant_scope IS NULL)
        AND (grant_for_secs IS NULL) = (grant_rule_hash IS NULL));

-- One grant per ticket at most (the UNIQUE is the last line of defence against double clicks;
-- the vote statement already lets only one click decide a ticket).
CREATE TABLE grants (
    id              uuid        PRIMARY KEY,
    ticket_id       uuid        NOT NULL UNIQUE REFERENCES tickets (id) ON DELETE CASCADE,
    principal       text        NOT NULL,
    tool            text        NOT NULL,
    scope           text        NOT NULL CHECK (scope IN ('tool', 'arguments')),
    -- The canonical request hash; set exactly when the scope is `arguments`.
    request_hash    text        CHECK ((scope = 'arguments') = (request_hash IS NOT NULL)),
    rule            text        NOT NULL,
    rule_hash       text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    created_by_id   text        NOT NULL,
    created_by_name text        NOT NULL,
    revoked_at      timestamptz,
    revoked_by_id   text,
    revoked_by_name text
);

-- The gateway's lookup before a hold: equality on principal, tool and rule hash, then a range
-- on expires_at, over unrevoked rows only. Revoked and long-expired rows stay out of the way.
CREATE INDEX grants_active ON grants (principal, tool, rule_hash, expires_at)
    WHERE revoked_at IS NULL;

-- A call that passed on a grant names the ticket that created the grant.
ALTER TABLE audit_log ADD COLUMN grant_ticket_id uuid;
