//! Durable group commit: a bounded queue in front of one writer task that
//! drains it into batches and writes each batch through a [`BatchSink`].
//!
//! A batch is whatever is queued when the previous write finishes (up to
//! `max_batch_size`, optionally after lingering), so the more callers wait,
//! the more events share one commit. A batch that would go out beside one
//! still in flight waits until it holds as many events as the newest batch
//! out (or until a batch lands): otherwise the first caller acknowledged
//! would make a batch of one on its own, and the batches of a steady load
//! would split into ever smaller commits. Each caller is acknowledged only after
//! the write that holds its event succeeded. Transient failures are retried
//! with exponential backoff while any caller of the batch still waits.
//!
//! Everything here follows tokio's clock, so it is tested on paused time with
//! a scripted sink.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agent_patterns_audit::{AuditError, AuditEvent, ChainHead, EVENTS_LOGGED_TOTAL};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

/// Metric: events per written batch (histogram).
pub const BATCH_SIZE: &str = "audit_batch_size";
/// Metric: time to write and commit one batch, in seconds (histogram).
pub const COMMIT_DURATION_SECONDS: &str = "audit_commit_duration_seconds";
/// Metric: batch attempts that failed transiently and were retried.
pub const WRITE_RETRIES_TOTAL: &str = "audit_write_retries_total";
/// Metric: events waiting for the writer (gauge).
pub const QUEUE_DEPTH: &str = "audit_queue_depth";

/// An event waiting to be written, with its caller's acknowledgement.
pub(crate) struct Pending {
    pub(crate) event: AuditEvent,
    pub(crate) ack: oneshot::Sender<Result<(), AuditError>>,
}

/// What a successful batch write reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    /// The chain head after the batch.
    pub(crate) head: ChainHead,
    /// Rows actually inserted (duplicates of stored ids are not).
    pub(crate) inserted: usize,
}

/// Why a batch write failed.
#[derive(Debug, Clone)]
pub(crate) enum WriteError {
    /// The backend is unreachable or restarting: try again later.
    Transient(String),
    /// The backend refused the batch: trying again would fail the same way.
    Fatal(String),
}

/// What became of a pipelined batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Stored.
    Committed,
    /// Not written: the batch before it had not committed when this one
    /// looked. Either it failed, or it had not even reached the store yet
    /// (batches travel on separate connections); in the second case sending
    /// the batch again succeeds.
    PredecessorMissing,
    /// Not written: the chain does not continue from where the batch was
    /// chained (another writer extended it), or an id is stored already.
    Refused,
}

/// What a pipelined send resolves to: the batch back (for its callers'
/// acknowledgements) and its outcome.
pub(crate) type Sent = (Vec<Pending>, Result<Outcome, WriteError>);

/// Durably writes batches.
pub(crate) trait BatchSink: Send + 'static {
    /// The careful path: writes `batch` in one atomic unit, chaining its
    /// events onto the head it reads from the store; either every event is
    /// stored (or was already stored) or none. Runs alone: nothing else of
    /// this writer is in flight.
    fn write(
        &mut self,
        batch: &mut [Pending],
    ) -> impl Future<Output = Result<Written, WriteError>> + Send;

    /// The pipelined path: writes `batch`, which the writer has chained from
    /// `after` to `end`, possibly while batches sent before it are still in
    /// flight. A batch never commits unless every batch sent before it did.
    fn send(
        &mut self,
        batch: Vec<Pending>,
        after: ChainHead,
        end: ChainHead,
    ) -> impl Future<Output = Sent> + Send + 'static;
}

/// What callers send the writer.
// Almost every command is a `Log`; boxing it would add an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Command {
    Log(Pending),
    /// Answered once everything queued before it has been written or failed.
    Flush(oneshot::Sender<()>),
    /// Like `Flush`, then the writer stops and releases its sink (and so its
    /// database connection); later submissions fail with `Closed`.
    Close(oneshot::Sender<()>),
}

/// The writer's state, shared with the store's health check and `count`.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    consecutive_failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    committed_head: AtomicU64,
}

impl Shared {
    /// Starts from the head found in the database.
    pub(crate) fn new(head: ChainHead) -> Self {
        let shared = Self::default();
        shared
            .committed_head
            .store(head.sequence, Ordering::Relaxed);
        shared
    }

    /// The latest committed head sequence this process knows of.
    pub(crate) fn committed_sequence(&self) -> u64 {
        self.committed_head.load(Ordering::Relaxed)
    }

    /// The last write error, if the last attempt failed.
    pub(crate) fn failing(&self) -> Option<String> {
        if self.consecutive_failures.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(last.clone().unwrap_or_default())
    }

    fn record_success(&self, head: ChainHead) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.committed_head
            .fetch_max(head.sequence, Ordering::Relaxed);
    }

    fn record_failure(&self, error: &str) {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *last = Some(error.to_owned());
    }
}

/// Tuning of the queue and the writer (validated by the store's config).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) queue_capacity: usize,
    pub(crate) max_batch_size: usize,
    pub(crate) linger: Duration,
    pub(crate) log_timeout: Duration,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    /// Batches in flight at once (at least 1).
    pub(crate) max_in_flight: usize,
}

/// The callers' side: a handle on the queue. Dropping it lets the writer
/// finish what is queued and stop.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Command>,
    settings: Settings,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Log(pending) => write!(f, "Log({})", pending.event.id),
            Self::Flush(_) => f.write_str("Flush"),
            Self::Close(_) => f.write_str("Close"),
        }
    }
}

impl GroupCommit {
    /// Spawns the writer task on the current tokio runtime.
    pub(crate) fn start<S: BatchSink>(sink: S, settings: Settings, shared: Arc<Shared>) -> Self {
        let (queue, rx) = mpsc::channel(settings.queue_capacity);
        let (acks, written) = mpsc::channel(ACK_QUEUE);
        tokio::spawn(acknowledge_batches(written));
        let writer = Writer {
            rx,
            sink,
            shared,
            settings,
            acks,
            head: None,
            flights: VecDeque::new(),
            staged: Vec::new(),
        };
        tokio::spawn(writer.run());
        Self { queue, settings }
    }

    /// Queues `event` and waits until it is written, all within `log_timeout`.
    pub(crate) async fn submit(&self, event: AuditEvent) -> Result<(), AuditError> {
        let timeout = self.settings.log_timeout;
        let deadline = Instant::now() + timeout;
        let (ack, acked) = oneshot::channel();
        let queued = self.queue.send(Command::Log(Pending { event, ack }));
        match tokio::time::timeout_at(deadline, queued).await {
            Err(_) => {
                return Err(AuditError::QueueFull {
                    capacity: self.settings.queue_capacity,
                    waited: timeout,
                });
            }
            Ok(Err(_)) => return Err(AuditError::Closed),
            Ok(Ok(())) => {}
        }
        // Giving up drops `acked`, which tells the writer not to retry for us.
        match tokio::time::timeout_at(deadline, acked).await {
            Err(_) => Err(AuditError::Timeout(timeout)),
            Ok(Err(_)) => Err(AuditError::Storage("audit writer stopped".into())),
            Ok(Ok(result)) => result,
        }
    }

    /// Waits until everything queued before this call is written or failed.
    pub(crate) async fn flush(&self) -> Result<(), AuditError> {
        let (done, flushed) = oneshot::channel();
        self.queue
            .send(Command::Flush(done))
            .await
            .map_err(|_| AuditError::Closed)?;
        flushed.await.map_err(|_| AuditError::Closed)
    }

    /// Writes everything queued before this call, then stops the writer.
    pub(crate) async fn close(&self) -> Result<(), AuditError> {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Command::Close(done)).await.is_err() {
            return Ok(()); // already closed
        }
        closed.await.map_err(|_| AuditError::Closed)
    }

    /// Events waiting in the queue.
    pub(crate) fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

struct Writer<S> {
    rx: mpsc::Receiver<Command>,
    sink: S,
    shared: Arc<Shared>,
    settings: Settings,
    /// Written batches whose callers are still to be told.
    acks: mpsc::Sender<Vec<Pending>>,
    /// Where the chain ends after the last batch sent, committed or still in
    /// flight; `None` when unknown (at start, after a failure), which makes
    /// the next batch take the careful path.
    head: Option<ChainHead>,
    /// Batches sent and not yet landed, oldest first.
    flights: VecDeque<Flight>,
    /// Events taken off the queue for the next batch while it waits to be
    /// as large as the newest batch in flight (see `next_command`).
    staged: Vec<Pending>,
}

/// A batch on its way to the store.
struct Flight {
    /// Events in the batch.
    events: usize,
    outcome: JoinHandle<Sent>,
    /// Flush requests answered once this batch has landed.
    flushes: Vec<oneshot::Sender<()>>,
    after: ChainHead,
    end: ChainHead,
    started: Instant,
    /// Times this batch was sent again because its probe ran before the
    /// batch before it had reached the store.
    resends: u32,
}

/// Resends of one batch after losing the race with its predecessor, before
/// it takes the careful path instead.
const MAX_RESENDS: u32 = 3;

/// Batches handed to the acknowledging task at most; beyond, the writer
/// acknowledges itself.
const ACK_QUEUE: usize = 8;

/// How long past the callers' deadline the writer still waits for a write
/// before abandoning it; sinks are expected to give up at the deadline
/// themselves (and close the connection they used).
pub(crate) const ABANDON_GRACE: Duration = Duration::from_secs(1);

/// Why a write that took longer than every caller's deadline was abandoned.
pub(crate) fn abandoned(deadline: Duration) -> String {
    format!("audit batch write abandoned after {deadline:?} (connection stalled?)")
}

/// Batches of at most this many events are acknowledged by the writer
/// itself.
const ACK_DIRECTLY: usize = 4;

/// Tells every caller of a written batch that its event is stored.
fn acknowledge(batch: &mut Vec<Pending>) {
    for pending in batch.drain(..) {
        // The caller may have stopped waiting; nothing to tell then.
        let _ = pending.ack.send(Ok(()));
    }
}

/// Acknowledges written batches handed over by the writer, in the order it
/// handed them over (batches it acknowledges itself skip this queue).
async fn acknowledge_batches(mut batches: mpsc::Receiver<Vec<Pending>>) {
    while let Some(mut batch) = batches.recv().await {
        acknowledge(&mut batch);
    }
}

fn answer(flushes: &mut Vec<oneshot::Sender<()>>) {
    for done in flushes.drain(..) {
        // The flusher may have stopped waiting; nothing to tell then.
        let _ = done.send(());
    }
}

impl<S: BatchSink> Writer<S> {
    /// Runs until every sender is gone and the queue is drained.
    async fn run(mut self) {
        let mut stop = false;
        while !stop {
            let Some(first) = self.next_command().await else {
                break;
            };
            let mut batch = std::mem::take(&mut self.staged);
            batch.reserve(self.settings.max_batch_size.saturating_sub(batch.len()));
            let mut flushes = Vec::new();
            self.collect(first, &mut batch, &mut flushes, &mut stop)
                .await;
            metrics::gauge!(QUEUE_DEPTH).set(self.rx.len() as f64);
            // Callers that gave up while queued are not written.
            batch.retain(|pending| !pending.ack.is_closed());
            if batch.is_empty() {
                match self.flights.back_mut() {
                    Some(last) => last.flushes.append(&mut flushes),
                    None => answer(&mut flushes),
                }
            } else if let Some(after) = self.head {
                let mut end = after;
                for pending in &mut batch {
                    end.append(&mut pending.event);
                }
                self.head = Some(end);
                self.dispatch(batch, flushes, after, end, 0);
            } else {
                // The head is unknown only when nothing is in flight.
                self.write_with_retry(&mut batch).await;
                answer(&mut flushes);
            }
        }
        while let Some(mut flight) = self.flights.pop_front() {
            let sent = (&mut flight.outcome).await;
            self.land(flight, sent).await;
        }
        // Callers still queued behind a close learn that the store is closed.
        self.rx.close();
        while let Ok(command) = self.rx.try_recv() {
            match command {
                Command::Log(pending) => {
                    let _ = pending.ack.send(Err(AuditError::Closed));
                }
                Command::Flush(done) | Command::Close(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    /// The next command, landing batches in flight meanwhile: while fewer
    /// than `max_in_flight` batches are out, whichever comes first; at the
    /// limit, the oldest batch lands first. While a batch is in flight, the
    /// events that arrive are staged until they are as many as the newest
    /// batch out; then `Some(None)` says the staged events make the next
    /// batch. `None` once the queue is closed and drained.
    async fn next_command(&mut self) -> Option<Option<Command>> {
        loop {
            let room = self.flights.len() < self.settings.max_in_flight;
            let threshold = self
                .flights
                .back()
                .map_or(1, |newest| newest.events)
                .min(self.settings.max_batch_size);
            let Some(oldest) = self.flights.front_mut() else {
                if !self.staged.is_empty() {
                    return Some(None);
                }
                return self.rx.recv().await.map(Some);
            };
            let sent = if room {
                tokio::select! {
                    biased;
                    command = self.rx.recv() => match command {
                        Some(Command::Log(pending)) => {
                            self.staged.push(pending);
                            if self.staged.len() + self.rx.len() >= threshold {
                                return Some(None);
                            }
                            continue;
                        }
                        Some(other) => return Some(Some(other)),
                        None if self.staged.is_empty() => return None,
                        None => return Some(None),
                    },
                    sent = &mut oldest.outcome => sent,
                }
            } else {
                (&mut oldest.outcome).await
            };
            if let Some(flight) = self.flights.pop_front() {
                self.land(flight, sent).await;
            }
        }
    }

    /// Sends a chained batch and tracks it.
    fn dispatch(
        &mut self,
        batch: Vec<Pending>,
        flushes: Vec<oneshot::Sender<()>>,
        after: ChainHead,
        end: ChainHead,
        resends: u32,
    ) {
        // A write that outlives every caller's deadline is abandoned (its
        // connection closes): a half-open connection cannot stall the writer,
        // flushes or close. Whatever it did is found by the careful path.
        let deadline = self.settings.log_timeout + ABANDON_GRACE;
        let events = batch.len();
        let write = self.sink.send(batch, after, end);
        let outcome = tokio::spawn(async move {
            tokio::time::timeout(deadline, write)
                .await
                .unwrap_or_else(|_| (Vec::new(), Err(WriteError::Transient(abandoned(deadline)))))
        });
        self.flights.push_back(Flight {
            events,
            outcome,
            flushes,
            after,
            end,
            started: Instant::now(),
            resends,
        });
    }

    /// Lands the oldest batch in flight. If it did not commit, no batch sent
    /// after it can have (each waits for its predecessor), so they are all
    /// awaited. When the oldest only lost the race with the batch before it
    /// (which has committed, or it would not be the oldest), they are all
    /// sent again as they are; otherwise each is written the careful way, in
    /// order.
    async fn land(&mut self, flight: Flight, outcome: Result<Sent, JoinError>) {
        let (mut batch, result) = self.unpack(outcome);
        if let Ok(Outcome::Committed) = result {
            let mut flushes = flight.flushes;
            self.committed(&mut batch, flight.end, flight.started);
            answer(&mut flushes);
            return;
        }
        let mut retry_pipelined =
            matches!(result, Ok(Outcome::PredecessorMissing)) && flight.resends < MAX_RESENDS;
        if let Err(WriteError::Transient(error) | WriteError::Fatal(error)) = &result {
            self.shared.record_failure(error);
            metrics::counter!(WRITE_RETRIES_TOTAL).increment(1);
            tracing::warn!(%error, events = batch.len(), "audit batch failed; rewriting it");
        }
        let mut stalled = vec![(batch, flight)];
        while let Some(mut next) = self.flights.pop_front() {
            let outcome = (&mut next.outcome).await;
            let (mut batch, result) = self.unpack(outcome);
            match result {
                Ok(Outcome::Committed) => {
                    // Only possible when the batch before committed after all
                    // (its answer was lost): the careful path finds those rows.
                    self.committed(&mut batch, next.end, next.started);
                    retry_pipelined = false;
                }
                // It waited for the batch before, which did not commit.
                Ok(Outcome::PredecessorMissing) => {}
                // Anything else is written the careful way, and so is every
                // batch: a batch resent as it was must never follow one that
                // is not.
                Ok(Outcome::Refused) | Err(_) => retry_pipelined = false,
            }
            stalled.push((batch, next));
        }
        if retry_pipelined && stalled.iter().all(|(batch, _)| !batch.is_empty()) {
            for (batch, flight) in stalled {
                self.dispatch(
                    batch,
                    flight.flushes,
                    flight.after,
                    flight.end,
                    flight.resends + 1,
                );
            }
            return;
        }
        self.head = None;
        for (mut batch, flight) in stalled {
            let mut flushes = flight.flushes;
            self.write_with_retry(&mut batch).await;
            answer(&mut flushes);
        }
    }

    /// A batch task's result; a task that panicked took its batch with it
    /// (those callers learn it from their dropped acknowledgements).
    fn unpack(&self, outcome: Result<Sent, JoinError>) -> Sent {
        outcome.unwrap_or_else(|error| {
            tracing::error!(%error, "audit batch task failed");
            self.shared.record_failure(&error.to_string());
            (Vec::new(), Err(WriteError::Fatal(error.to_string())))
        })
    }

    /// Records a committed batch and hands its callers to the acknowledging
    /// task.
    fn committed(&mut self, batch: &mut Vec<Pending>, end: ChainHead, started: Instant) {
        metrics::histogram!(COMMIT_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(BATCH_SIZE).record(batch.len() as f64);
        metrics::counter!(EVENTS_LOGGED_TOTAL, "store" => "postgres").increment(batch.len() as u64);
        self.shared.record_success(end);
        self.acknowledge_later(std::mem::take(batch));
    }

    /// Waking the callers of a large batch is left to the acknowledging
    /// task, so the next batch goes out at once; a few are woken right here,
    /// which saves them a hop.
    fn acknowledge_later(&self, mut batch: Vec<Pending>) {
        if batch.len() <= ACK_DIRECTLY {
            acknowledge(&mut batch);
            return;
        }
        if let Err(full) = self.acks.try_send(batch) {
            let (mpsc::error::TrySendError::Full(mut acked)
            | mpsc::error::TrySendError::Closed(mut acked)) = full;
            acknowledge(&mut acked);
        }
    }

    /// Gathers one batch: `first`, then whatever is queued (waiting up to
    /// `linger` for more), until the batch is full or a flush request is met.
    async fn collect(
        &mut self,
        first: Option<Command>,
        batch: &mut Vec<Pending>,
        flushes: &mut Vec<oneshot::Sender<()>>,
        stop: &mut bool,
    ) {
        let linger_until = Instant::now() + self.settings.linger;
        let mut next = first;
        loop {
            match next.take() {
                Some(Command::Log(pending)) => batch.push(pending),
                Some(Command::Flush(done)) => {
                    flushes.push(done);
                    return;
                }
                Some(Command::Close(done)) => {
                    flushes.push(done);
                    *stop = true;
                    return;
                }
                None => {}
            }
            if batch.len() >= self.settings.max_batch_size {
                return;
            }
            next = match self.rx.try_recv() {
                Ok(command) => Some(command),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) if self.settings.linger.is_zero() => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(linger_until, self.rx.recv())
                        .await
                        .ok()
                        .flatten()
                }
            };
            if next.is_none() {
                return;
            }
        }
    }

    /// Writes the batch the careful way, retrying transient failures with
    /// exponential backoff for as long as some caller still waits. Callers
    /// that gave up (their deadline passed) are dropped from the batch
    /// before each attempt. Success makes the head known again.
    async fn write_with_retry(&mut self, batch: &mut Vec<Pending>) {
        let mut backoff = self.settings.initial_backoff;
        loop {
            batch.retain(|pending| !pending.ack.is_closed());
            if batch.is_empty() {
                return;
            }
            let started = Instant::now();
            let deadline = self.settings.log_timeout + ABANDON_GRACE;
            let written = tokio::time::timeout(deadline, self.sink.write(batch))
                .await
                .unwrap_or_else(|_| Err(WriteError::Transient(abandoned(deadline))));
            match written {
                Ok(written) => {
                    metrics::histogram!(COMMIT_DURATION_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!(BATCH_SIZE).record(batch.len() as f64);
                    metrics::counter!(EVENTS_LOGGED_TOTAL, "store" => "postgres")
                        .increment(written.inserted as u64);
                    self.shared.record_success(written.head);
                    self.head = Some(written.head);
                    self.acknowledge_later(std::mem::take(batch));
                    return;
                }
                Err(WriteError::Transient(error)) => {
                    self.shared.record_failure(&error);
                    metrics::counter!(WRITE_RETRIES_TOTAL).increment(1);
                    tracing::warn!(
                        %error,
                        events = batch.len(),
                        retry_in = ?backoff,
                        "audit batch failed; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                }
                Err(WriteError::Fatal(error)) => {
                    self.shared.record_failure(&error);
                    tracing::error!(%error, events = batch.len(), "audit batch rejected");
                    let failure = AuditError::Storage(error);
                    for pending in batch.drain(..) {
                        let _ = pending.ack.send(Err(failure.clone()));
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use agent_patterns_audit::AuditEventType;

    use super::*;

    /// A sink that plays a script of outcomes (then succeeds), records when
    /// and with how many events it was called, and chains like a real store.
    #[derive(Clone, Default)]
    struct Scripted {
        script: Arc<Mutex<VecDeque<Result<(), WriteError>>>>,
        calls: Arc<Mutex<Vec<(Instant, usize)>>>,
        /// `write` (careful) or `send` (pipelined), per call.
        paths: Arc<Mutex<Vec<&'static str>>>,
        /// Sends still to lose the race with their predecessor.
        races: Arc<Mutex<u32>>,
        /// The call (by position among all calls) to refuse, as when another
        /// writer took the position.
        refuse_call: Arc<Mutex<Option<usize>>>,
        /// Sends still to hang (a stalled connection).
        stalls: Arc<Mutex<u32>>,
        head: Arc<Mutex<ChainHead>>,
        write_time: Duration,
    }

    impl Scripted {
        fn with(script: impl IntoIterator<Item = Result<(), WriteError>>) -> Self {
            let sink = Self::default();
            sink.script.lock().unwrap().extend(script);
            sink
        }

        fn calls(&self) -> Vec<(Instant, usize)> {
            self.calls.lock().unwrap().clone()
        }

        fn paths(&self) -> Vec<&'static str> {
            self.paths.lock().unwrap().clone()
        }

        fn record(&self, path: &'static str, events: usize) {
            self.calls.lock().unwrap().push((Instant::now(), events));
            self.paths.lock().unwrap().push(path);
        }
    }

    impl BatchSink for Scripted {
        async fn write(&mut self, batch: &mut [Pending]) -> Result<Written, WriteError> {
            self.record("write", batch.len());
            tokio::time::sleep(self.write_time).await;
            let next = self.script.lock().unwrap().pop_front().unwrap_or(Ok(()));
            next?;
            let mut head = self.head.lock().unwrap();
            for pending in batch.iter_mut() {
                head.append(&mut pending.event);
            }
            Ok(Written {
                head: *head,
                inserted: batch.len(),
            })
        }

        /// Commits only if the head is still where the batch was chained
        /// from, as the real store's claim and probe ensure.
        fn send(
            &mut self,
            batch: Vec<Pending>,
            after: ChainHead,
            end: ChainHead,
        ) -> impl Future<Output = Sent> + Send + 'static {
            let sink = self.clone();
            async move {
                let call = sink.calls.lock().unwrap().len();
                sink.record("send", batch.len());
                let stall = {
                    let mut stalls = sink.stalls.lock().unwrap();
                    let stall = *stalls > 0;
                    *stalls = stalls.saturating_sub(1);
                    stall
                };
                if stall {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(sink.write_time).await;
                if *sink.refuse_call.lock().unwrap() == Some(call) {
                    return (batch, Ok(Outcome::Refused));
                }
                let next = sink.script.lock().unwrap().pop_front().unwrap_or(Ok(()));
                if let Err(error) = next {
                    return (batch, Err(error));
                }
                let mut races = sink.races.lock().unwrap();
                let mut head = sink.head.lock().unwrap();
                if *head != after || *races > 0 {
                    *races = races.saturating_sub(1);
                    return (batch, Ok(Outcome::PredecessorMissing));
                }
                *head = end;
                (batch, Ok(Outcome::Committed))
            }
        }
    }

    /// A scripted sink whose writes take 10 ms, so batches overlap.
    fn slow_sink() -> Scripted {
        Scripted {
            write_time: Duration::from_millis(10),
            ..Scripted::default()
        }
    }

    fn settings() -> Settings {
        Settings {
            queue_capacity: 100,
            max_batch_size: 100,
            linger: Duration::ZERO,
            log_timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            max_in_flight: 2,
        }
    }

    fn event() -> AuditEvent {
        AuditEvent::new(AuditEventType::DataAccess, "u", "read", true)
    }

    fn transient() -> Result<(), WriteError> {
        Err(WriteError::Transient("connection reset".into()))
    }

    fn offsets(calls: &[(Instant, usize)], start: Instant) -> Vec<u128> {
        calls
            .iter()
            .map(|(at, _)| (*at - start).as_millis())
            .collect()
    }

    /// The number of events of each call.
    fn batch_sizes(calls: &[(Instant, usize)]) -> Vec<usize> {
        calls.iter().map(|(_, n)| *n).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_doubling_backoff() {
        let sink = Scripted::with([transient(), transient(), transient()]);
        let shared = Arc::new(Shared::default());
        let queue = GroupCommit::start(sink.clone(), settings(), Arc::clone(&shared));
        let start = Instant::now();
        queue.submit(event()).await.unwrap();
        assert_eq!(offsets(&sink.calls(), start), [0, 10, 30, 70]);
        assert_eq!(shared.committed_sequence(), 1);
        assert!(
            shared.failing().is_none(),
            "success clears the failure state"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_once_every_caller_has_given_up() {
        let sink = Scripted::with(std::iter::repeat_with(transient).take(1_000));
        let shared = Arc::new(Shared::default());
        let settings = Settings {
            log_timeout: Duration::from_millis(200),
            max_backoff: Duration::from_millis(40),
            ..settings()
        };
        let queue = GroupCommit::start(sink.clone(), settings, Arc::clone(&shared));
        let start = Instant::now();
        let result = queue.submit(event()).await;
        assert_eq!(result, Err(AuditError::Timeout(Duration::from_millis(200))));
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        assert_eq!(shared.failing().as_deref(), Some("connection reset"));
        // Backoff 10, 20, 40, 40, … ms: attempts at 0, 10, 30, 70, 110, 150, 190.
        assert_eq!(
            offsets(&sink.calls(), start),
            [0, 10, 30, 70, 110, 150, 190]
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            sink.calls().len(),
            7,
            "no retries for callers that are gone"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_failure_fails_the_whole_batch_after_one_careful_rewrite() {
        let sink = Scripted {
            write_time: Duration::from_millis(5),
            ..Scripted::default()
        };
        sink.script.lock().unwrap().extend([
            Ok(()),
            Err(WriteError::Fatal("bad row".into())),
            Err(WriteError::Fatal("bad row".into())),
        ]);
        let queue = Arc::new(GroupCommit::start(sink.clone(), settings(), Arc::default()));
        // The first event occupies the writer; the next three form one batch.
        let first = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.submit(event()).await }
        });
        tokio::task::yield_now().await;
        let rest = submit_together(&queue, 3);
        assert_eq!(first.await.unwrap(), Ok(()));
        for task in rest {
            assert_eq!(
                task.await.unwrap(),
                Err(AuditError::Storage("bad row".into()))
            );
        }
        let sizes = batch_sizes(&sink.calls());
        // Sent pipelined, then once more the careful way, which fails alike.
        assert_eq!(sizes, [1, 3, 3]);
        assert_eq!(sink.paths(), ["write", "send", "write"]);
    }

    #[tokio::test(start_paused = true)]
    async fn callers_waiting_during_a_write_share_the_next_batch() {
        let sink = Scripted {
            write_time: Duration::from_millis(5),
            ..Scripted::default()
        };
        let queue = Arc::new(GroupCommit::start(sink.clone(), settings(), Arc::default()));
        all_logged(submit_together(&queue, 64)).await;
        let sizes = batch_sizes(&sink.calls());
        assert_eq!(sizes.iter().sum::<usize>(), 64);
        assert!(
            sizes.len() <= 3,
            "64 concurrent callers need a handful of writes: {sizes:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn linger_gathers_late_arrivals_and_batch_size_caps_batches() {
        let sink = Scripted::default();
        let settings = Settings {
            linger: Duration::from_millis(5),
            max_batch_size: 3,
            ..settings()
        };
        let queue = Arc::new(GroupCommit::start(sink.clone(), settings, Arc::default()));
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let queue = Arc::clone(&queue);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(i)).await;
                    queue.submit(event()).await
                })
            })
            .collect();
        all_logged(tasks).await;
        let sizes = batch_sizes(&sink.calls());
        assert_eq!(sizes, [3, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_makes_callers_wait_until_their_deadline() {
        // The sink never finishes within the test: the writer holds one event,
        // the queue holds one more, the third caller waits and is refused.
        let sink = Scripted {
            write_time: Duration::from_secs(3_600),
            ..Scripted::default()
        };
        let settings = Settings {
            queue_capacity: 1,
            max_batch_size: 1,
            log_timeout: Duration::from_millis(100),
            ..settings()
        };
        let queue = Arc::new(GroupCommit::start(sink, settings, Arc::default()));
        let held = submit_together(&queue, 2);
        tokio::task::yield_now().await;
        let start = Instant::now();
        let refused = queue.submit(event()).await;
        assert_eq!(
            refused,
            Err(AuditError::QueueFull {
                capacity: 1,
                waited: Duration::from_millis(100)
            })
        );
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        for task in held {
            assert!(matches!(task.await.unwrap(), Err(AuditError::Timeout(_))));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn close_writes_what_was_queued_then_refuses_and_releases_the_sink() {
        let sink = Scripted {
            write_time: Duration::from_millis(20),
            ..Scripted::default()
        };
        let released = Arc::downgrade(&sink.calls);
        let queue = Arc::new(GroupCommit::start(sink, settings(), Arc::default()));
        let tasks = submit_together(&queue, 5);
        tokio::time::sleep(Duration::from_millis(1)).await;
        queue.close().await.unwrap();
        all_logged(tasks).await;
        assert_eq!(queue.submit(event()).await, Err(AuditError::Closed));
        assert!(released.upgrade().is_none(), "the writer dropped its sink");
        queue.close().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn flush_returns_after_earlier_events_are_written() {
        let sink = Scripted {
            write_time: Duration::from_millis(20),
            ..Scripted::default()
        };
        let shared = Arc::new(Shared::default());
        let queue = Arc::new(GroupCommit::start(sink, settings(), Arc::clone(&shared)));
        let tasks = submit_together(&queue, 10);
        tokio::task::yield_now().await;
        queue.flush().await.unwrap();
        assert_eq!(shared.committed_sequence(), 10);
        all_logged(tasks).await;
    }

    /// Starts a queue on `sink` (shared with the caller).
    fn started(sink: &Scripted, settings: Settings) -> (Arc<Shared>, Arc<GroupCommit>) {
        let shared = Arc::new(Shared::default());
        let queue = GroupCommit::start(sink.clone(), settings, Arc::clone(&shared));
        (shared, Arc::new(queue))
    }

    /// Submits `count` events, one per millisecond.
    fn submit_staggered(
        queue: &Arc<GroupCommit>,
        count: u32,
    ) -> Vec<tokio::task::JoinHandle<Result<(), AuditError>>> {
        submit_spaced(queue, count, Duration::from_millis(1))
    }

    /// Submits `count` events at once: they are all queued before the writer
    /// runs again.
    fn submit_together(
        queue: &Arc<GroupCommit>,
        count: u32,
    ) -> Vec<tokio::task::JoinHandle<Result<(), AuditError>>> {
        submit_spaced(queue, count, Duration::ZERO)
    }

    /// Awaits every task of `tasks`; each must have logged its event.
    async fn all_logged(tasks: Vec<tokio::task::JoinHandle<Result<(), AuditError>>>) {
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    }

    /// Submits eight events at once and, from 1 ms on while they are in
    /// flight, `late` more one per millisecond; waits until all are logged.
    async fn eight_then_late(queue: &Arc<GroupCommit>, late: u32) {
        let mut tasks = submit_together(queue, 8);
        tokio::time::sleep(Duration::from_millis(1)).await;
        tasks.extend(submit_staggered(queue, late));
        all_logged(tasks).await;
    }

    /// Submits `count` events, `gap` apart.
    fn submit_spaced(
        queue: &Arc<GroupCommit>,
        count: u32,
        gap: Duration,
    ) -> Vec<tokio::task::JoinHandle<Result<(), AuditError>>> {
        (0..count)
            .map(|i| {
                let queue = Arc::clone(queue);
                tokio::spawn(async move {
                    if !gap.is_zero() {
                        tokio::time::sleep(gap * i).await;
                    }
                    queue.submit(event()).await
                })
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn batches_overlap_up_to_the_in_flight_limit() {
        let sink = slow_sink();
        let (shared, queue) = started(&sink, settings());
        // The first write learns the head (careful); then one event per ms.
        queue.submit(event()).await.unwrap();
        let start = Instant::now();
        all_logged(submit_staggered(&queue, 3)).await;
        let calls = sink.calls();
        // At 0 and 1 ms two batches go out at once; the third waits for the
        // oldest to land at 10 ms.
        assert_eq!(offsets(&calls[1..], start), [0, 1, 10]);
        assert_eq!(sink.paths(), ["write", "send", "send", "send"]);
        assert_eq!(shared.committed_sequence(), 4);
        assert_eq!(sink.head.lock().unwrap().sequence, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn one_batch_in_flight_writes_batches_one_after_another() {
        let sink = slow_sink();
        let settings = Settings {
            max_in_flight: 1,
            ..settings()
        };
        let queue = Arc::new(GroupCommit::start(sink.clone(), settings, Arc::default()));
        queue.submit(event()).await.unwrap();
        let start = Instant::now();
        all_logged(submit_staggered(&queue, 3)).await;
        // The second and third event share the batch after the first.
        assert_eq!(offsets(&sink.calls()[1..], start), [0, 10]);
        let sizes = batch_sizes(&sink.calls());
        assert_eq!(sizes, [1, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_sent_beside_another_waits_until_it_is_as_large() {
        let sink = slow_sink();
        let (shared, queue) = started(&sink, settings());
        queue.submit(event()).await.unwrap();
        let start = Instant::now();
        // Eight at once make one batch; eight more come one per ms from 1 ms
        // while it is in flight. They go out together at 8 ms, when there are
        // as many as in the batch beside them, not one by one.
        eight_then_late(&queue, 8).await;
        let calls = sink.calls();
        assert_eq!(offsets(&calls[1..], start), [0, 8]);
        let sizes = batch_sizes(&calls);
        assert_eq!(sizes, [1, 8, 8]);

        // Fewer than that wait no longer than the batch in flight: two late
        // events go out when it lands.
        let start = Instant::now();
        eight_then_late(&queue, 2).await;
        let calls = sink.calls();
        assert_eq!(offsets(&calls[3..], start), [0, 10]);
        let sizes = batch_sizes(&calls[3..]);
        assert_eq!(sizes, [8, 2]);
        assert_eq!(shared.committed_sequence(), 27);
    }

    #[tokio::test(start_paused = true)]
    async fn batches_behind_one_that_failed_are_rewritten_the_careful_way_in_order() {
        let sink = slow_sink();
        // The first careful write succeeds, the first pipelined batch fails.
        sink.script.lock().unwrap().extend([Ok(()), transient()]);
        let (shared, queue) = started(&sink, settings());
        queue.submit(event()).await.unwrap();
        let start = Instant::now();
        let tasks = submit_staggered(&queue, 2);
        all_logged(tasks).await;
        // The second batch was chained on the first, which did not commit,
        // so it did not either; both are written again, oldest first.
        assert_eq!(sink.paths(), ["write", "send", "send", "write", "write"]);
        assert_eq!(offsets(&sink.calls()[1..], start), [0, 1, 11, 21]);
        assert_eq!(sink.head.lock().unwrap().sequence, 3);
        assert_eq!(shared.committed_sequence(), 3);
        assert!(shared.failing().is_none(), "the rewrite succeeded");
    }

    #[tokio::test(start_paused = true)]
    async fn flush_waits_for_batches_in_flight() {
        let sink = slow_sink();
        let (shared, queue) = started(&sink, settings());
        queue.submit(event()).await.unwrap();
        let tasks = submit_staggered(&queue, 2);
        tokio::time::sleep(Duration::from_millis(2)).await;
        let start = Instant::now();
        queue.flush().await.unwrap();
        // Both batches (sent at 0 and 1 ms) landed before the flush returned.
        assert_eq!(start.elapsed(), Duration::from_millis(9));
        assert_eq!(shared.committed_sequence(), 3);
        all_logged(tasks).await;
    }

    #[tokio::test(start_paused = true)]
    async fn batches_that_lost_the_race_with_their_predecessor_are_sent_again() {
        let sink = slow_sink();
        let (shared, queue) = started(&sink, settings());
        queue.submit(event()).await.unwrap();
        // The next batch looks for its predecessor too early, once.
        *sink.races.lock().unwrap() = 1;
        let start = Instant::now();
        all_logged(submit_staggered(&queue, 2)).await;
        // The second batch was chained on the first and failed with it; both
        // go out again as they are, without the careful path.
        assert_eq!(sink.paths(), ["write", "send", "send", "send", "send"]);
        assert_eq!(offsets(&sink.calls()[1..], start), [0, 1, 11, 11]);
        assert_eq!(sink.head.lock().unwrap().sequence, 3);
        assert_eq!(shared.committed_sequence(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_keeps_losing_the_race_takes_the_careful_path() {
        let sink = Scripted::default();
        let queue = Arc::new(GroupCommit::start(sink.clone(), settings(), Arc::default()));
        queue.submit(event()).await.unwrap();
        *sink.races.lock().unwrap() = u32::MAX;
        queue.submit(event()).await.unwrap();
        // Sent once and resent MAX_RESENDS times, then written carefully.
        assert_eq!(
            sink.paths(),
            ["write", "send", "send", "send", "send", "write"]
        );
        assert_eq!(sink.head.lock().unwrap().sequence, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_batch_behind_a_lost_race_sends_everything_the_careful_way() {
        let sink = slow_sink();
        let queue = Arc::new(GroupCommit::start(sink.clone(), settings(), Arc::default()));
        queue.submit(event()).await.unwrap();
        // The first batch loses the race, the second is refused: resending
        // them as they are could put a batch after one that is not there.
        *sink.races.lock().unwrap() = 1;
        *sink.refuse_call.lock().unwrap() = Some(2);
        let tasks = submit_staggered(&queue, 2);
        all_logged(tasks).await;
        assert_eq!(sink.paths(), ["write", "send", "send", "write", "write"]);
        assert_eq!(sink.head.lock().unwrap().sequence, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_is_abandoned_at_the_deadline_and_the_writer_goes_on() {
        let sink = Scripted::default();
        let settings = Settings {
            log_timeout: Duration::from_millis(200),
            ..settings()
        };
        let (shared, queue) = started(&sink, settings);
        queue.submit(event()).await.unwrap();
        *sink.stalls.lock().unwrap() = 1;
        let start = Instant::now();
        assert_eq!(
            queue.submit(event()).await,
            Err(AuditError::Timeout(Duration::from_millis(200)))
        );
        // The flush waits for the abandoned write, which ends a grace period
        // after the deadline.
        queue.flush().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(1_200));
        assert_eq!(
            shared.failing().as_deref(),
            Some("audit batch write abandoned after 1.2s (connection stalled?)")
        );
        // The head is unknown after the abandoned write: the next batch goes
        // the careful way and succeeds.
        queue.submit(event()).await.unwrap();
        assert_eq!(sink.paths(), ["write", "send", "write"]);
        assert!(shared.failing().is_none());
    }
}
