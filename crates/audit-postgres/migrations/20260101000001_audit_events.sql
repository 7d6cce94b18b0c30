-- The audit trail: one row per event, one hash chain across every writer.
--
-- Rows are append-only: the trigger below rejects UPDATE, DELETE and TRUNCATE
-- for every role, the owner included. The writer role should hold only
-- SELECT, INSERT on audit_events and SELECT, UPDATE on audit_chain_head.

CREATE TABLE audit_events (
    -- Position in the hash chain, gapless from 1; also the log order.
    seq         BIGINT      PRIMARY KEY CHECK (seq > 0),
    -- UUID v7 from the application; unique, so a retried batch cannot duplicate.
    id          UUID        NOT NULL UNIQUE,
    ts          TIMESTAMPTZ NOT NULL,
    event_type  TEXT        NOT NULL,
    actor       TEXT        NOT NULL,
    action      TEXT        NOT NULL,
    success     BOOLEAN     NOT NULL,
    session_id  TEXT,
    source_ip   TEXT,
    resource    TEXT,
    metadata    JSONB       NOT NULL DEFAULT '{}'::jsonb,
    prev_hash   BYTEA       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash        BYTEA       NOT NULL CHECK (octet_length(hash) = 32),
    -- When the row was committed (not hashed: informational).
    logged_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The guide's queries: an actor's events and a type's events, newest first;
-- time ranges.
CREATE INDEX audit_events_actor_seq ON audit_events (actor, seq DESC);
CREATE INDEX audit_events_type_seq ON audit_events (event_type, seq DESC);
-- Event times rise with the sequence, so a BRIN index serves time ranges at
-- almost no insert cost.
CREATE INDEX audit_events_ts ON audit_events USING brin (ts);

-- The chain head: locked FOR UPDATE inside every batch transaction, so all
-- writers (threads, processes, replicas) extend one chain in turn.
CREATE TABLE audit_chain_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    seq       BIGINT  NOT NULL CHECK (seq >= 0),
    hash      BYTEA   NOT NULL CHECK (octet_length(hash) = 32)
);
INSERT INTO audit_chain_head (singleton, seq, hash)
VALUES (TRUE, 0, decode(repeat('00', 32), 'hex'));

CREATE FUNCTION audit_events_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % rejected', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_reject_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_reject_change();

-- The head only moves forward.
CREATE FUNCTION audit_chain_head_forward_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR NEW.seq < OLD.seq THEN
        RAISE EXCEPTION 'audit_chain_head only moves forward: % rejected', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER audit_chain_head_forward
    BEFORE UPDATE OR DELETE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_chain_head_forward_only();
