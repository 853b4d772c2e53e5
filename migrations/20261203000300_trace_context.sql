-- W3C trace context (`_meta.traceparent` / `_meta.tracestate`) of the call a ticket holds and of
-- each audited call, so an operator can follow one call from the agent's trace into ours.
-- Nullable: most calls carry none, and a malformed traceparent is never stored.
ALTER TABLE tickets
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate  text;

ALTER TABLE audit_log
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate  text;
