//! Where conversations live: in memory (the default), or in PostgreSQL when
//! `DATABASE_URL` is set, so any replica can serve any conversation.
//!
//! A conversation is *locked* while a turn runs — a per-conversation mutex in
//! memory, a `SELECT … FOR UPDATE` row lock in Postgres — so two messages to
//! one conversation are handled one after the other, on any replica.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use composable_rust_agent_patterns::{AgentError, Message};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::OwnedMutexGuard;

use crate::agent::{AgentState, Status};
use crate::conversations::{Conversation, Conversations, Page, Summary};

/// The conversations schema, applied at start. Every statement is idempotent
/// (`IF NOT EXISTS`), so it is not recorded in sqlx's migration table, which
/// the audit store's migrations own in the same database.
pub const SCHEMA: &str = include_str!("../schema.sql");

/// Conversation storage.
#[derive(Debug)]
pub enum Storage {
    /// Bounded, in this process.
    Memory(Conversations),
    /// A PostgreSQL table shared by every replica.
    Postgres(PgPool),
}

fn db(e: sqlx::Error) -> AgentError {
    AgentError::Unavailable(format!("conversation store: {e}"))
}

/// A conversation held for one turn; [`save`](Self::save) writes the new state
/// and releases it, dropping releases it unchanged.
///
/// The state is held here, not copied: a turn [takes](Self::take_state) it, so
/// the message history it appends to is not shared and is never copied, and
/// gives it back with [`put_state`](Self::put_state) or `save`.
pub struct Locked {
    conversation: Conversation,
    /// The stored state without its messages: what a turn that is not kept
    /// puts back.
    stored: AgentState,
    inner: Option<Inner>,
}

enum Inner {
    Memory(OwnedMutexGuard<Conversation>),
    Postgres(Transaction<'static, Postgres>),
}

impl Locked {
    /// The conversation as stored (its messages are empty while a turn holds
    /// the state).
    pub fn conversation(&self) -> &Conversation {
        &self.conversation
    }

    /// Lend the state to a turn. Give it back with
    /// [`put_state`](Self::put_state), [`put_unkept`](Self::put_unkept) or
    /// [`save`](Self::save): a `Locked` dropped without it releases the
    /// conversation with no messages.
    pub fn take_state(&mut self) -> AgentState {
        let rest = self.conversation.state.without_messages();
        std::mem::replace(&mut self.conversation.state, rest)
    }

    /// Give back a state taken with [`take_state`](Self::take_state).
    pub fn put_state(&mut self, state: AgentState) {
        self.conversation.state = state;
    }

    /// Give back the state of a turn that is not kept (a blocked message): its
    /// messages, with the status, steps and error the conversation had before.
    pub fn put_unkept(&mut self, state: AgentState) {
        self.conversation.state = AgentState {
            messages: state.messages,
            ..self.stored.clone()
        };
    }

    /// Store `state` and release the conversation.
    pub async fn save(mut self, state: AgentState) -> Result<(), AgentError> {
        match self.inner.take() {
            Some(Inner::Memory(mut guard)) => {
                guard.state = state;
                Ok(())
            }
            Some(Inner::Postgres(mut tx)) => {
                sqlx::query(
                    "UPDATE agent_conversations SET status = $2, messages = $3 WHERE id = $1",
                )
                .bind(&self.conversation.id)
                .bind(sqlx::types::Json(&state.status))
                .bind(sqlx::types::Json(&state.messages))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)
            }
            None => Err(AgentError::Internal(
                "the conversation was already saved".into(),
            )),
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // Unsaved: memory gets its state back; Postgres rolls back.
        if let Some(Inner::Memory(guard)) = &mut self.inner {
            guard.state = std::mem::take(&mut self.conversation.state);
        }
    }
}

impl Storage {
    /// Connect to `url` and apply the schema.
    pub async fn postgres(url: &str, max_connections: u32) -> Result<Self, AgentError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(db)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(|e| AgentError::Unavailable(format!("conversation store schema: {e}")))?;
        Ok(Self::Postgres(pool))
    }

    /// The pool, when Postgres-backed.
    pub fn pool(&self) -> Option<&PgPool> {
        match self {
            Self::Postgres(pool) => Some(pool),
            Self::Memory(_) => None,
        }
    }

    /// Store a new conversation.
    pub async fn create(&self, conversation: Conversation) -> Result<(), AgentError> {
        match self {
            Self::Memory(m) => m
                .insert(conversation)
                .await
                .map_err(|full| AgentError::Unavailable(full.to_string())),
            Self::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO agent_conversations (id, owner, created_at, status, messages) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&conversation.id)
                .bind(&conversation.owner)
                .bind(conversation.created_at)
                .bind(sqlx::types::Json(&conversation.state.status))
                .bind(sqlx::types::Json(&conversation.state.messages))
                .execute(pool)
                .await
                .map_err(db)?;
                Ok(())
            }
        }
    }

    /// Hold conversation `id` for a turn, if it exists and `owner` owns it
    /// (`None`: any owner, for admins).
    pub async fn lock(&self, id: &str, owner: Option<&str>) -> Result<Option<Locked>, AgentError> {
        match self {
            Self::Memory(m) => {
                let Some(shared) = m.get(id, owner).await else {
                    return Ok(None);
                };
                let mut guard = shared.lock_owned().await;
                let conversation = Conversation {
                    id: guard.id.clone(),
                    owner: guard.owner.clone(),
                    created_at: guard.created_at,
                    // Moved, not shared; `Drop` or `save` puts it back.
                    state: std::mem::take(&mut guard.state),
                };
                Ok(Some(Locked {
                    stored: conversation.state.without_messages(),
                    conversation,
                    inner: Some(Inner::Memory(guard)),
                }))
            }
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(db)?;
                let row = sqlx::query(
                    "SELECT id, owner, created_at, status, messages FROM agent_conversations WHERE id = $1 FOR UPDATE",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                let Some(row) = row else { return Ok(None) };
                let conversation = from_row(&row)?;
                if owner.is_some_and(|o| o != conversation.owner) {
                    return Ok(None);
                }
                Ok(Some(Locked {
                    stored: conversation.state.without_messages(),
                    conversation,
                    inner: Some(Inner::Postgres(tx)),
                }))
            }
        }
    }

    /// Conversation `id` as stored, without holding it, if `owner` owns it.
    pub async fn read(
        &self,
        id: &str,
        owner: Option<&str>,
    ) -> Result<Option<Conversation>, AgentError> {
        match self {
            Self::Memory(m) => {
                let Some(shared) = m.get(id, owner).await else {
                    return Ok(None);
                };
                let stored = shared.lock().await;
                Ok(Some(Conversation {
                    id: stored.id.clone(),
                    owner: stored.owner.clone(),
                    created_at: stored.created_at,
                    state: stored.state.clone(),
                }))
            }
            Self::Postgres(pool) => {
                let row = sqlx::query("SELECT id, owner, created_at, status, messages FROM agent_conversations WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .map_err(db)?;
                let Some(row) = row else { return Ok(None) };
                let conversation = from_row(&row)?;
                Ok(owner
                    .is_none_or(|o| o == conversation.owner)
                    .then_some(conversation))
            }
        }
    }

    /// `owner`'s conversations, newest first.
    pub async fn list(
        &self,
        owner: &str,
        limit: usize,
        cursor: Option<u64>,
    ) -> Result<Page, AgentError> {
        match self {
            Self::Memory(m) => Ok(m.list(owner, limit, cursor).await),
            Self::Postgres(pool) => {
                let upper = cursor.map_or(i64::MAX, |c| i64::try_from(c).unwrap_or(i64::MAX));
                let rows = sqlx::query(
                    "SELECT seq, id, owner, created_at, status, messages FROM agent_conversations \
                     WHERE owner = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
                )
                .bind(owner)
                .bind(upper)
                .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await
                .map_err(db)?;
                let mut conversations = Vec::new();
                let mut last_seq = None;
                for row in rows.iter().take(limit) {
                    let c = from_row(row)?;
                    last_seq = Some(row.try_get::<i64, _>("seq").map_err(db)?);
                    conversations.push(Summary {
                        id: c.id,
                        created_at: c.created_at,
                        message_count: c.state.messages.len(),
                        status: c.state.status,
                    });
                }
                let next_cursor =
                    (rows.len() > limit).then(|| last_seq.unwrap_or_default().to_string());
                Ok(Page {
                    conversations,
                    next_cursor,
                })
            }
        }
    }

    /// Conversations and messages held.
    pub async fn counts(&self) -> Result<(usize, usize), AgentError> {
        match self {
            Self::Memory(m) => Ok(m.counts().await),
            Self::Postgres(pool) => {
                let row = sqlx::query(
                    "SELECT count(*) AS conversations, coalesce(sum(jsonb_array_length(messages)), 0)::bigint AS messages \
                     FROM agent_conversations",
                )
                .fetch_one(pool)
                .await
                .map_err(db)?;
                let conversations: i64 = row.try_get("conversations").map_err(db)?;
                let messages: i64 = row.try_get("messages").map_err(db)?;
                Ok((
                    usize::try_from(conversations).unwrap_or(0),
                    usize::try_from(messages).unwrap_or(0),
                ))
            }
        }
    }
}

fn from_row(row: &sqlx::postgres::PgRow) -> Result<Conversation, AgentError> {
    let id: String = row.try_get("id").map_err(db)?;
    let owner: String = row.try_get("owner").map_err(db)?;
    let created_at: DateTime<Utc> = row.try_get("created_at").map_err(db)?;
    let status: sqlx::types::Json<Status> = row.try_get("status").map_err(db)?;
    let messages: sqlx::types::Json<Vec<Message>> = row.try_get("messages").map_err(db)?;
    Ok(Conversation {
        state: AgentState {
            conversation_id: Some(id.clone()),
            messages: Arc::new(messages.0),
            user_id: Some(owner.clone()),
            steps: 0,
            status: status.0,
            last_error: None,
        },
        id,
        owner,
        created_at,
    })
}
