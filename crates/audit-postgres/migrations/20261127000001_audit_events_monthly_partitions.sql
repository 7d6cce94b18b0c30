-- Monthly partitions of audit_events by event time (UTC), so retention drops
-- whole months (`DROP TABLE audit_events_2025_01`, by the owner or a role it
-- grants that to) while rows stay append-only for everyone: row triggers
-- reject UPDATE and DELETE on every partition, and TRUNCATE is refused on the
-- parent and on every partition `audit_ensure_partitions` creates.
--
-- Unique constraints of a partitioned table include the partition key: the
-- primary key is (seq, ts) and the id is unique per (id, ts). A retried event
-- carries the same id and time, so it still cannot be stored twice; sequence
-- numbers stay unique because every batch moves the locked chain head.

CREATE TABLE audit_events_partitioned (
    seq         BIGINT      NOT NULL CHECK (seq > 0),
    id          UUID        NOT NULL,
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
    logged_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (seq, ts),
    UNIQUE (id, ts)
) PARTITION BY RANGE (ts);

-- Rows whose month has no partition (yet) land here rather than failing.
CREATE TABLE audit_events_default PARTITION OF audit_events_partitioned DEFAULT;

-- Every month the existing trail covers gets its partition before the rows
-- move, so none of them is stranded in the default partition.
DO $$
DECLARE
    month_start date;
    part text;
BEGIN
    FOR month_start IN
        SELECT DISTINCT date_trunc('month', ts AT TIME ZONE 'UTC')::date FROM audit_events
    LOOP
        part := format('audit_events_%s', to_char(month_start, 'YYYY_MM'));
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF audit_events_partitioned FOR VALUES FROM (%L) TO (%L)',
            part,
            month_start::timestamp AT TIME ZONE 'UTC',
            (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        EXECUTE format(
            'CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION audit_events_reject_change()',
            part);
    END LOOP;
END;
$$;

INSERT INTO audit_events_partitioned
SELECT seq, id, ts, event_type, actor, action, success, session_id, source_ip,
       resource, metadata, prev_hash, hash, logged_at
FROM audit_events ORDER BY seq;

DROP TABLE audit_events;
ALTER TABLE audit_events_partitioned RENAME TO audit_events;
ALTER TABLE audit_events RENAME CONSTRAINT audit_events_partitioned_pkey TO audit_events_pkey;
ALTER TABLE audit_events RENAME CONSTRAINT audit_events_partitioned_id_ts_key TO audit_events_id_ts_key;

CREATE INDEX audit_events_actor_seq ON audit_events (actor, seq DESC);
CREATE INDEX audit_events_type_seq ON audit_events (event_type, seq DESC);
CREATE INDEX audit_events_ts ON audit_events USING brin (ts);

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_reject_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_reject_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events_default
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_reject_change();

-- Creates the partitions of the current month and the next `months_ahead`
-- months that are missing; returns how many it created. A month whose rows
-- already sit in the default partition is skipped (its rows stay there).
-- SECURITY DEFINER: a writer role granted EXECUTE can keep partitions ahead
-- without holding CREATE on the schema. Safe to run from several replicas.
CREATE FUNCTION audit_ensure_partitions(months_ahead integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    first_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    month_start date;
    lo timestamptz;
    hi timestamptz;
    part text;
    created integer := 0;
BEGIN
    IF months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be between 0 and 120, got %', months_ahead;
    END IF;
    FOR i IN 0..months_ahead LOOP
        month_start := (first_month + make_interval(months => i))::date;
        lo := month_start::timestamp AT TIME ZONE 'UTC';
        hi := (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        part := format('audit_events_%s', to_char(month_start, 'YYYY_MM'));
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        CONTINUE WHEN EXISTS (SELECT 1 FROM audit_events_default WHERE ts >= lo AND ts < hi);
        BEGIN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
                part, lo, hi);
            EXECUTE format(
                'CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON %I '
                'FOR EACH STATEMENT EXECUTE FUNCTION audit_events_reject_change()',
                part);
            created := created + 1;
        EXCEPTION WHEN duplicate_table OR duplicate_object THEN
            -- Another replica created it first.
            NULL;
        END;
    END LOOP;
    RETURN created;
END;
$$;

-- Functions are executable by PUBLIC unless revoked; grant it to the writer
-- role explicitly (see the crate documentation's role layout).
REVOKE EXECUTE ON FUNCTION audit_ensure_partitions(integer) FROM PUBLIC;

SELECT audit_ensure_partitions(2);
