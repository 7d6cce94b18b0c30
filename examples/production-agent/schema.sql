-- Conversations of the agent server, so any replica can serve any conversation.
-- Applied at start; every statement is idempotent.
CREATE TABLE IF NOT EXISTS agent_conversations (
    seq         BIGSERIAL   NOT NULL UNIQUE,
    id          TEXT        PRIMARY KEY,
    owner       TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    status      JSONB       NOT NULL,
    messages    JSONB       NOT NULL
);

CREATE INDEX IF NOT EXISTS agent_conversations_owner_seq ON agent_conversations (owner, seq DESC);
