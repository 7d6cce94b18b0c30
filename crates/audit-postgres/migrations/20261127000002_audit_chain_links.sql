-- Chain links replace the single chain-head row, so that a writer can have
-- several batches in flight at once while every writer (task, process,
-- replica) still extends one gapless chain.
--
-- Each committed batch leaves one link: the position it continued from
-- (`after_seq`), and its last event's sequence and hash. Two unique indexes
-- keep the chain linear:
--
-- * `after_seq`: at most one batch continues from any position, so two
--   writers can never both extend the same event (no fork). A batch whose
--   claim conflicts inserts nothing and its writer re-reads the head.
-- * `last_hash`: a batch sent before its predecessor committed probes for
--   the predecessor's link with a guard row (`after_seq` NULL, the
--   predecessor's last hash). The probe waits until the predecessor's
--   transaction ends. If the predecessor committed, the probe conflicts and
--   does nothing; if not, the probe's row is inserted and the trigger below
--   aborts the batch. So a batch never commits unless the batch before it
--   did, and a gap can never appear.
--
-- Links are a coordination aid, not evidence: the chain itself lives in
-- audit_events. Old links may be pruned (audit_prune_chain_links); a writer
-- whose predecessor link is gone simply fails its probe and re-reads the head.

-- Writers of the previous version move audit_chain_head; lock it for the
-- rest of this migration so the head copied below is the final one (they
-- block, then fail once the table is gone: every writer of a database must
-- run a version with chain links). Since the events table is partitioned, its
-- primary key is (seq, ts): the claim below, not a key on seq, is what keeps
-- sequence numbers unique.
LOCK TABLE audit_chain_head IN ACCESS EXCLUSIVE MODE;

DO $$
DECLARE
    head_seq bigint;
    head_hash bytea;
    last_seq bigint;
    last_hash bytea;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM audit_chain_head WHERE singleton;
    SELECT seq, hash INTO last_seq, last_hash FROM audit_events ORDER BY seq DESC LIMIT 1;
    IF last_seq IS NOT NULL AND (last_seq <> head_seq OR last_hash <> head_hash) THEN
        RAISE EXCEPTION 'audit chain head (seq %) does not match the newest event (seq %)',
            head_seq, last_seq;
    END IF;
END;
$$;

CREATE TABLE audit_chain_links (
    after_seq BIGINT UNIQUE CHECK (after_seq >= -1),
    last_seq  BIGINT NOT NULL CHECK (last_seq >= 0),
    last_hash BYTEA  NOT NULL UNIQUE CHECK (octet_length(last_hash) = 32),
    CHECK (after_seq IS NULL OR after_seq < last_seq)
);

-- The head as it stands: the genesis (seq 0) or the chain so far. Position
-- -1 is reserved for this row.
INSERT INTO audit_chain_links (after_seq, last_seq, last_hash)
SELECT -1, seq, hash FROM audit_chain_head WHERE singleton;

-- A probe row reaching the table means the predecessor batch did not commit.
CREATE FUNCTION audit_chain_links_check() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit batch after seq % discarded: the batch before it did not commit',
        NEW.last_seq
        USING ERRCODE = 'AU001';
END;
$$;

CREATE TRIGGER audit_chain_links_probe
    AFTER INSERT ON audit_chain_links
    FOR EACH ROW WHEN (NEW.after_seq IS NULL) EXECUTE FUNCTION audit_chain_links_check();

-- Links are never rewritten; they are deleted only through
-- audit_prune_chain_links, which keeps the newest ones.
CREATE FUNCTION audit_chain_links_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Only the pruning function, running as the table's owner, deletes.
    IF TG_OP = 'DELETE' AND current_setting('audit.pruning_links', true) = 'on'
        AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER')
    THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_chain_links is append-only: % rejected', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_chain_links_append_only
    BEFORE UPDATE OR DELETE ON audit_chain_links
    FOR EACH ROW EXECUTE FUNCTION audit_chain_links_reject_change();

CREATE TRIGGER audit_chain_links_no_truncate
    BEFORE TRUNCATE ON audit_chain_links
    FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_links_reject_change();

-- Deletes all but the newest `keep` links; returns how many it deleted.
-- SECURITY DEFINER: a writer role granted EXECUTE keeps the table small
-- without holding DELETE on it.
CREATE FUNCTION audit_prune_chain_links(keep integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    cutoff bigint;
    deleted bigint;
BEGIN
    IF keep < 1 THEN
        RAISE EXCEPTION 'keep must be at least 1, got %', keep;
    END IF;
    SELECT after_seq INTO cutoff FROM audit_chain_links
    WHERE after_seq IS NOT NULL ORDER BY after_seq DESC OFFSET keep - 1 LIMIT 1;
    IF cutoff IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM set_config('audit.pruning_links', 'on', true);
    DELETE FROM audit_chain_links WHERE after_seq < cutoff;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('audit.pruning_links', 'off', true);
    RETURN deleted;
END;
$$;

-- Pruning is for the owner and the roles it grants EXECUTE to.
REVOKE EXECUTE ON FUNCTION audit_prune_chain_links(integer) FROM PUBLIC;

DROP TABLE audit_chain_head;
DROP FUNCTION audit_chain_head_forward_only();
