-- Approval tickets: the single source of truth for every held tool call.
CREATE TABLE tickets (
    id               uuid PRIMARY KEY,
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'cancelled', 'executed')),
    principal        text        NOT NULL,
    session_id       text        NOT NULL,
    tool             text        NOT NULL,
    arguments        jsonb       NOT NULL,
    rule             text        NOT NULL,
    reason           text,
    approvers        text[]      NOT NULL DEFAULT '{}',
    slack_channel    text,
    request_hash     text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    decided_at       timestamptz,
    decided_by_id    text,
    decided_by_name  text,
    message_channel  text,
    message_ts       text,
    executed_at      timestamptz,
    notify_error     text
);

-- The sweeper and the batched waiter check both look tickets up by status.
CREATE INDEX tickets_status_expires ON tickets (status, expires_at);

-- A retry of the same call in the same session reattaches instead of opening a second ticket.
CREATE UNIQUE INDEX tickets_live_request ON tickets (session_id, request_hash)
    WHERE status IN ('pending', 'approved');

-- MCP sessions minted by the gateway; each belongs to the principal that opened it.
CREATE TABLE mcp_sessions (
    id                   text PRIMARY KEY,
    principal            text        NOT NULL,
    upstream_session_id  text,
    protocol_version     text,
    init_request         jsonb,
    created_at           timestamptz NOT NULL DEFAULT now(),
    deleted_at           timestamptz
);

-- One row per tools/call, written in batches off the request path.
CREATE TABLE audit_log (
    id               bigserial PRIMARY KEY,
    at               timestamptz NOT NULL,
    principal        text        NOT NULL,
    session_id       text,
    tool             text        NOT NULL,
    arguments        jsonb,
    rule             text,
    decision         text        NOT NULL,
    outcome          text        NOT NULL,
    ticket_id        uuid,
    decided_by       text,
    upstream_status  integer,
    latency_ms       double precision NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_ticket ON audit_log (ticket_id) WHERE ticket_id IS NOT NULL;
