//! One limited priority level's seats and queues, after upstream's `fairqueuing/queueset`: a
//! request takes a seat when one is free and nothing waits; otherwise its flow is dealt a hand
//! of queues by shuffle sharding (`handSize` of `queues`, from the flow's hash), it joins the
//! shortest queue of its hand, and is rejected when that queue already holds
//! `queueLengthLimit` requests (or at once under `Reject`). A freed seat goes to the head of
//! the non-empty queue with the fewest requests executing, so one busy flow cannot starve the
//! others' queues. A request that waits longer than its wait limit is rejected.
//!
//! Simplified from upstream: every request is one seat (no width estimate for lists, no extra
//! latency for watches' notifications), and queues are served by fewest-executing rather than
//! by virtual finish time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::config::LimitResponse;

/// Why a request got no seat (upstream's `reason` label values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// `Reject`, or queuing with every queue of the hand full.
    QueueFull,
    ConcurrencyLimit,
    TimeOut,
}

impl Rejected {
    pub fn reason(self) -> &'static str {
        match self {
            Rejected::QueueFull => "queue-full",
            Rejected::ConcurrencyLimit => "concurrency-limit",
            Rejected::TimeOut => "time-out",
        }
    }
}

struct Waiter {
    id: u64,
    dispatch: oneshot::Sender<()>,
}

struct State {
    limit: usize,
    executing: usize,
    queues: Vec<VecDeque<Waiter>>,
    /// Requests executing that came through each queue.
    executing_by_queue: Vec<usize>,
    next_id: u64,
    /// Where the search for the next queue to serve starts (round robin among equals).
    cursor: usize,
}

pub struct QueueSet {
    response: LimitResponse,
    state: Mutex<State>,
}

/// A seat, given back when dropped.
pub struct Seat {
    set: Arc<QueueSet>,
    queue: Option<usize>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut state = self.set.lock();
        state.executing -= 1;
        if let Some(q) = self.queue {
            state.executing_by_queue[q] -= 1;
        }
        QueueSet::dispatch(&mut state);
    }
}

/// Shuffle sharding (upstream's `Dealer`): `hand` distinct queues of `deck`, drawn from the
/// digits of `hash` in a mixed radix.
pub fn deal(mut hash: u64, deck: usize, hand: usize) -> Vec<usize> {
    let mut left: Vec<usize> = (0..deck).collect();
    let mut cards = Vec::with_capacity(hand);
    for i in 0..hand.min(deck) {
        let radix = (deck - i) as u64;
        let pick = (hash % radix) as usize;
        hash /= radix;
        cards.push(left.remove(pick));
    }
    cards
}

impl QueueSet {
    pub fn new(response: LimitResponse, limit: usize) -> Arc<QueueSet> {
        let queues = match &response {
            LimitResponse::Queue { queues, .. } => *queues,
            LimitResponse::Reject => 0,
        };
        Arc::new(QueueSet {
            response,
            state: Mutex::new(State {
                limit,
                executing: 0,
                queues: (0..queues).map(|_| VecDeque::new()).collect(),
                executing_by_queue: vec![0; queues],
                next_id: 0,
                cursor: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn response(&self) -> &LimitResponse {
        &self.response
    }

    /// A new limit (the configuration changed): waiting requests get the seats it adds.
    pub fn set_limit(&self, limit: usize) {
        let mut state = self.lock();
        state.limit = limit;
        Self::dispatch(&mut state);
    }

    /// (executing, waiting)
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (
            state.executing,
            state.queues.iter().map(VecDeque::len).sum(),
        )
    }

    /// Gives free seats to the heads of the queues, fewest executing first.
    fn dispatch(state: &mut State) {
        while state.executing < state.limit {
            let n = state.queues.len();
            let best = (0..n)
                .map(|i| (state.cursor + i) % n)
                .filter(|q| !state.queues[*q].is_empty())
                .min_by_key(|q| state.executing_by_queue[*q]);
            let Some(q) = best else { return };
            state.cursor = (q + 1) % n;
            let waiter = state.queues[q].pop_front().expect("a non-empty queue");
            state.executing += 1;
            state.executing_by_queue[q] += 1;
            if waiter.dispatch.send(()).is_err() {
                // Its request went away meanwhile: the seat is free again.
                state.executing -= 1;
                state.executing_by_queue[q] -= 1;
            }
        }
    }

    /// A seat for a request of the flow hashed `flow`, waiting at most `wait` in a queue.
    pub async fn acquire(self: &Arc<Self>, flow: u64, wait: Duration) -> Result<Seat, Rejected> {
        let (id, queue, rx) = {
            let mut state = self.lock();
            let waiting = state.queues.iter().any(|q| !q.is_empty());
            if state.executing < state.limit && !waiting {
                state.executing += 1;
                return Ok(Seat {
                    set: self.clone(),
                    queue: None,
                });
            }
            let LimitResponse::Queue {
                queues,
                hand_size,
                queue_length_limit,
            } = self.response
            else {
                return Err(Rejected::ConcurrencyLimit);
            };
            let hand = deal(flow, queues, hand_size);
            let q = hand
                .into_iter()
                .min_by_key(|q| state.queues[*q].len() + state.executing_by_queue[*q])
                .ok_or(Rejected::QueueFull)?;
            if state.queues[q].len() >= queue_length_limit {
                return Err(Rejected::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            let id = state.next_id;
            state.next_id += 1;
            state.queues[q].push_back(Waiter { id, dispatch: tx });
            (id, q, rx)
        };
        let seat = || Seat {
            set: self.clone(),
            queue: Some(queue),
        };
        if let Ok(Ok(())) = tokio::time::timeout(wait, rx).await {
            return Ok(seat());
        }
        let mut state = self.lock();
        let before = state.queues[queue].len();
        state.queues[queue].retain(|w| w.id != id);
        if state.queues[queue].len() < before {
            return Err(Rejected::TimeOut);
        }
        // Dispatched just as the wait ended: the seat is ours.
        drop(state);
        Ok(seat())
    }
}
