//! Conversations in memory, bounded, each behind its own lock so two messages
//! to one conversation are handled one after the other.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, RwLock};

use crate::agent::{AgentState, Status};

/// One stored conversation.
#[derive(Debug)]
pub struct Conversation {
    /// Its id.
    pub id: String,
    /// Its owner.
    pub owner: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The agent state.
    pub state: AgentState,
}

/// A page of a user's conversations, newest first.
#[derive(Debug, serde::Serialize)]
pub struct Page {
    /// The conversations.
    pub conversations: Vec<Summary>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// A conversation without its messages.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Its id.
    pub id: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Messages it holds.
    pub message_count: usize,
    /// Where it stands.
    #[serde(flatten)]
    pub status: Status,
}

/// All conversations.
#[derive(Debug)]
pub struct Conversations {
    max: usize,
    inner: RwLock<Index>,
}

#[derive(Debug, Default)]
struct Index {
    by_id: HashMap<String, Arc<Mutex<Conversation>>>,
    /// (owner, sequence) → id, for newest-first paging.
    by_owner: BTreeMap<(String, u64), String>,
    sequence: HashMap<String, u64>,
    next: u64,
}

/// Why a conversation could not be stored.
#[derive(Debug, thiserror::Error)]
#[error("the server holds its maximum of {0} conversations; end some first")]
pub struct Full(pub usize);

impl Conversations {
    /// At most `max` conversations.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            inner: RwLock::new(Index::default()),
        }
    }

    /// Store a new conversation. Ended conversations are dropped to make room.
    pub async fn insert(&self, conversation: Conversation) -> Result<(), Full> {
        let mut index = self.inner.write().await;
        if index.by_id.len() >= self.max {
            let mut ended = Vec::new();
            for (id, c) in &index.by_id {
                if let Ok(c) = c.try_lock()
                    && c.state.status == Status::Ended
                {
                    ended.push(id.clone());
                }
            }
            for id in ended {
                index.remove(&id);
            }
            if index.by_id.len() >= self.max {
                return Err(Full(self.max));
            }
        }
        index.next += 1;
        let seq = index.next;
        index
            .by_owner
            .insert((conversation.owner.clone(), seq), conversation.id.clone());
        index.sequence.insert(conversation.id.clone(), seq);
        index
            .by_id
            .insert(conversation.id.clone(), Arc::new(Mutex::new(conversation)));
        Ok(())
    }

    /// The conversation `id` if `owner` owns it (or `owner` is `None`: admin).
    pub async fn get(&self, id: &str, owner: Option<&str>) -> Option<Arc<Mutex<Conversation>>> {
        let conversation = self.inner.read().await.by_id.get(id).cloned()?;
        if let Some(owner) = owner
            && conversation.lock().await.owner != owner
        {
            return None;
        }
        Some(conversation)
    }

    /// `owner`'s conversations, newest first, `limit` per page.
    pub async fn list(&self, owner: &str, limit: usize, cursor: Option<u64>) -> Page {
        let index = self.inner.read().await;
        let upper = cursor.unwrap_or(u64::MAX);
        let ids: Vec<(u64, String)> = index
            .by_owner
            .range((owner.to_owned(), 0)..(owner.to_owned(), upper))
            .rev()
            .take(limit + 1)
            .map(|((_, seq), id)| (*seq, id.clone()))
            .collect();
        let conversations: Vec<_> = ids
            .iter()
            .take(limit)
            .filter_map(|(_, id)| index.by_id.get(id).cloned())
            .collect();
        drop(index);
        let next_cursor = (ids.len() > limit).then(|| ids[limit - 1].0.to_string());
        let mut page = Vec::new();
        for c in conversations {
            let c = c.lock().await;
            page.push(Summary {
                id: c.id.clone(),
                created_at: c.created_at,
                message_count: c.state.messages.len(),
                status: c.state.status.clone(),
            });
        }
        Page {
            conversations: page,
            next_cursor,
        }
    }

    /// Conversations and messages held.
    pub async fn counts(&self) -> (usize, usize) {
        let all: Vec<_> = self.inner.read().await.by_id.values().cloned().collect();
        let mut messages = 0;
        for c in &all {
            messages += c.lock().await.state.messages.len();
        }
        (all.len(), messages)
    }
}

impl Index {
    fn remove(&mut self, id: &str) {
        if let Some(c) = self.by_id.remove(id)
            && let Some(seq) = self.sequence.remove(id)
            && let Ok(c) = c.try_lock()
        {
            self.by_owner.remove(&(c.owner.clone(), seq));
        }
    }
}
