-- What each ticket's Slack message last showed, and when the reconciler last re-queued its job,
-- so that a message whose job was lost with Redis can be found from Postgres alone.
ALTER TABLE tickets
    ADD COLUMN message_status text
        CHECK (message_status IN ('pending', 'approved', 'denied', 'expired', 'cancelled', 'executed')),
    ADD COLUMN message_requeued_at timestamptz;

-- Messages posted before this column existed are taken to show their ticket's state; otherwise
-- the first pass would re-send an update for every message ever posted.
UPDATE tickets SET message_status = status WHERE message_ts IS NOT NULL;

-- Both reconciler queries read only these (small) partial indexes; the predicates must stay
-- word for word the ones in shared/src/ticket/message.rs.
CREATE INDEX tickets_message_unposted ON tickets (created_at)
    WHERE status = 'pending' AND message_ts IS NULL AND notify_error IS NULL;
CREATE INDEX tickets_message_stale ON tickets (decided_at)
    WHERE status <> 'pending' AND message_ts IS NOT NULL AND notify_error IS NULL
      AND message_status IS DISTINCT FROM status
      AND (status <> 'executed' OR message_status IS DISTINCT FROM 'approved');
