-- Held calls served as MCP tasks (2025-11-25 `params.task`, or the 2026-07-28 tasks extension).
-- One row per task beside its ticket: the ticket stays the truth for the decision; the row holds
-- what any gateway instance needs to run the approved call (the request and the headers that go
-- upstream) and, once it ran, the upstream's answer, so that every poll on every replica gets the
-- same result. `outcome` is set once (the first writer wins): 'result', 'error' or 'cancelled'.
CREATE TABLE ticket_tasks (
    task_id          text PRIMARY KEY,
    ticket_id        uuid NOT NULL UNIQUE REFERENCES tickets (id) ON DELETE CASCADE,
    principal        text NOT NULL,
    -- 'classic' (2025-11-25 tasks) or 'extension' (io.modelcontextprotocol/tasks, 2026-07-28)
    era              text NOT NULL,
    -- the gateway session the call was made in; NULL without one (2026-07-28)
    session_id       text,
    -- the JSON-RPC request to send upstream once approved (without `params.task`)
    request          jsonb NOT NULL,
    -- the request headers that go upstream with it (protocol version, Mcp-* mirrors)
    headers          jsonb NOT NULL DEFAULT '{}'::jsonb,
    poll_interval_ms integer NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    outcome          text CHECK (outcome IN ('result', 'error', 'cancelled')),
    -- the upstream's `result`, or the JSON-RPC `error` object the task failed with
    response         jsonb,
    -- when the task reached a terminal status (set once); results are kept for a retention
    -- period after it, then the row is deleted
    ended_at         timestamptz
);

-- The sweeper's scans: tasks not ended yet, and ended tasks past their retention.
CREATE INDEX ticket_tasks_open ON ticket_tasks (created_at) WHERE ended_at IS NULL;
CREATE INDEX ticket_tasks_ended ON ticket_tasks (ended_at) WHERE ended_at IS NOT NULL;

-- The audit row of a call served as a task names the task.
ALTER TABLE audit_log ADD COLUMN task_id text;
