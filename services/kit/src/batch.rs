//! Batching by size or age: a batch is due when it holds `size` items, or when its oldest item
//! has waited `max_wait` — measured by a real timer, not checked on the next arrival.
//!
//! [`Batch`] is the rule as a value (no I/O); [`collect`] drives it from a channel with
//! `tokio::time`, so tests can pause the clock.

use std::time::Duration;

use tokio::{sync::mpsc, time::Instant};

/// When a batch is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRule {
    /// Items that make a batch due at once.
    pub size: usize,
    /// Longest the oldest item may wait.
    pub max_wait: Duration,
}

impl Default for BatchRule {
    /// 50 items or 2 seconds.
    fn default() -> Self {
        Self { size: 50, max_wait: Duration::from_secs(2) }
    }
}

/// Items waiting for their batch to be due.
#[derive(Debug)]
pub struct Batch<T> {
    rule: BatchRule,
    items: Vec<T>,
    oldest: Option<Instant>,
}

impl<T> Batch<T> {
    /// An empty batch under `rule` (a size of 0 counts as 1).
    pub fn new(rule: BatchRule) -> Self {
        let rule = BatchRule { size: rule.size.max(1), ..rule };
        Self { rule, items: Vec::with_capacity(rule.size), oldest: None }
    }

    /// Adds an item that arrived at `now`; returns the batch if that made it due by size.
    pub fn push(&mut self, item: T, now: Instant) -> Option<Vec<T>> {
        self.oldest.get_or_insert(now);
        self.items.push(item);
        (self.items.len() >= self.rule.size).then(|| self.take())
    }

    /// When the batch becomes due by age; `None` while empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.oldest.map(|t| t + self.rule.max_wait)
    }

    /// Takes whatever is waiting.
    pub fn take(&mut self) -> Vec<T> {
        self.oldest = None;
        std::mem::replace(&mut self.items, Vec::with_capacity(self.rule.size))
    }

    /// How many items are waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The next due batch from `rx`: as soon as `rule.size` items arrived, or when the oldest
/// received item has waited `rule.max_wait`. `None` once the channel is closed and drained
/// (a partial batch still waiting is returned first).
pub async fn collect<T>(rx: &mut mpsc::Receiver<T>, batch: &mut Batch<T>) -> Option<Vec<T>> {
    loop {
        let deadline = batch.deadline();
        tokio::select! {
            item = rx.recv() => match item {
                Some(item) => {
                    if let Some(full) = batch.push(item, Instant::now()) {
                        return Some(full);
                    }
                }
                None => return (!batch.is_empty()).then(|| batch.take()),
            },
            () = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                return Some(batch.take());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> BatchRule {
        BatchRule::default()
    }

    #[tokio::test(start_paused = true)]
    async fn forty_nine_entries_wait_and_the_fiftieth_flushes() {
        let (tx, mut rx) = mpsc::channel(100);
        let mut batch = Batch::new(rule());
        for i in 0..49 {
            tx.send(i).await.unwrap();
        }
        // Nothing is due before the timer: a 1 s look finds no batch.
        let early =
            tokio::time::timeout(Duration::from_secs(1), collect(&mut rx, &mut batch)).await;
        assert!(early.is_err(), "49 entries flushed early: {early:?}");
        tx.send(49).await.unwrap();
        let started = Instant::now();
        let got = collect(&mut rx, &mut batch).await.unwrap();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        assert_eq!(started.elapsed(), Duration::ZERO, "the 50th entry flushes at once");
    }

    #[tokio::test(start_paused = true)]
    async fn one_entry_flushes_when_it_has_waited_two_seconds() {
        let (tx, mut rx) = mpsc::channel(100);
        let mut batch = Batch::new(rule());
        let started = Instant::now();
        tx.send("only").await.unwrap();
        let got = collect(&mut rx, &mut batch).await.unwrap();
        assert_eq!(got, vec!["only"]);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_runs_from_the_oldest_entry_not_the_latest() {
        let (tx, mut rx) = mpsc::channel(100);
        let mut batch = Batch::new(rule());
        let started = Instant::now();
        let sender = tokio::spawn(async move {
            for i in 0..3 {
                tx.send(i).await.unwrap();
                tokio::time::sleep(Duration::from_millis(900)).await;
            }
            tx
        });
        let got = collect(&mut rx, &mut batch).await.unwrap();
        assert_eq!((got, started.elapsed()), (vec![0, 1, 2], Duration::from_secs(2)));
        drop(sender.await.unwrap());
        assert_eq!(collect(&mut rx, &mut batch).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_channel_hands_over_what_waits() {
        let (tx, mut rx) = mpsc::channel(100);
        let mut batch = Batch::new(rule());
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        drop(tx);
        assert_eq!(collect(&mut rx, &mut batch).await, Some(vec![1, 2]));
        assert_eq!(collect(&mut rx, &mut batch).await, None);
    }
}
