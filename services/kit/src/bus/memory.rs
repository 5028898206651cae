//! [`MemoryBus`]: the embedded bus, topics in memory. It lives and dies with its process.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Bus, Message, Once, seq_of, wait_for_messages};

/// The embedded bus: topics in memory.
#[derive(Debug, Default)]
pub struct MemoryBus {
    topics: Mutex<HashMap<String, Topic>>,
}

#[derive(Debug, Default)]
struct Topic {
    next_seq: u64,
    log: BTreeMap<u64, Vec<u8>>,
    groups: HashMap<String, Group>,
    /// Keys of `publish_once`: key → (record, expiry).
    once: HashMap<String, (Vec<u8>, Instant)>,
    /// Wakes this topic's blocked receivers (and only them) on publish.
    notify: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Group {
    /// The next sequence number no consumer has received.
    next: u64,
    /// Received, unacknowledged: seq → (consumer, when delivered).
    pending: BTreeMap<u64, (String, Instant)>,
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Topic>) -> T) -> T {
        f(&mut self.topics.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait]
impl Bus for MemoryBus {
    fn durable(&self, _topic: &str) -> bool {
        false
    }

    async fn backlog(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        Ok(self.with(|topics| {
            topics.get(topic).and_then(|t| t.groups.get(group).map(|g| (t, g))).map_or(
                0,
                |(t, g)| {
                    // Sequence numbers are contiguous: everything from `next` on is undelivered.
                    (t.next_seq + 1).saturating_sub(g.next) + g.pending.len() as u64
                },
            )
        }))
    }

    async fn publish(&self, topic: &str, payloads: &[Vec<u8>]) -> anyhow::Result<Vec<String>> {
        let (ids, notify) = self.with(|topics| {
            let t = topics.entry(topic.to_string()).or_default();
            let ids = payloads
                .iter()
                .map(|p| {
                    t.next_seq += 1;
                    t.log.insert(t.next_seq, p.clone());
                    t.next_seq.to_string()
                })
                .collect();
            (ids, t.notify.clone())
        });
        notify.notify_waiters();
        Ok(ids)
    }

    async fn publish_once(
        &self,
        topic: &str,
        key: &str,
        record: &[u8],
        payload: &[u8],
        ttl: Duration,
    ) -> anyhow::Result<Once> {
        let (once, notify) = self.with(|topics| {
            let t = topics.entry(topic.to_string()).or_default();
            let notify = t.notify.clone();
            let now = Instant::now();
            if t.once.len() > 10_000 {
                t.once.retain(|_, (_, expires)| *expires > now);
            }
            if let Some((record, expires)) = t.once.get(key)
                && *expires > now
            {
                return (Once::Existing(record.clone()), notify);
            }
            t.once.insert(key.to_string(), (record.to_vec(), now + ttl));
            t.next_seq += 1;
            t.log.insert(t.next_seq, payload.to_vec());
            (Once::Published(t.next_seq.to_string()), notify)
        });
        if matches!(once, Once::Published(_)) {
            notify.notify_waiters();
        }
        Ok(once)
    }

    async fn ensure_group(&self, topic: &str, group: &str) -> anyhow::Result<()> {
        self.with(|topics| {
            let t = topics.entry(topic.to_string()).or_default();
            let first = t.log.keys().next().copied().unwrap_or(t.next_seq + 1);
            t.groups
                .entry(group.to_string())
                .or_insert_with(|| Group { next: first, pending: BTreeMap::new() });
        });
        Ok(())
    }

    async fn receive(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Message>> {
        let notify =
            self.with(|topics| topics.entry(topic.to_string()).or_default().notify.clone());
        wait_for_messages(&notify, block, || async {
            self.with(|topics| -> anyhow::Result<Vec<Message>> {
                let t = topics.get_mut(topic).with_context(|| format!("no topic {topic}"))?;
                let g = t
                    .groups
                    .get_mut(group)
                    .with_context(|| format!("no group {group} on {topic}"))?;
                let now = Instant::now();
                let mut out = Vec::new();
                for (seq, payload) in t.log.range(g.next..) {
                    if out.len() == max {
                        break;
                    }
                    g.pending.insert(*seq, (consumer.to_string(), now));
                    out.push(Message { id: seq.to_string(), payload: payload.clone() });
                }
                if let Some(last) = out.last() {
                    g.next = seq_of(&last.id)? + 1;
                }
                Ok(out)
            })
        })
        .await
    }

    async fn reclaim(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> anyhow::Result<Vec<Message>> {
        self.with(|topics| {
            let Some(t) = topics.get_mut(topic) else { return Ok(Vec::new()) };
            let g =
                t.groups.get_mut(group).with_context(|| format!("no group {group} on {topic}"))?;
            let now = Instant::now();
            let mut out = Vec::new();
            for (seq, (owner, at)) in g.pending.iter_mut() {
                if out.len() == max {
                    break;
                }
                if now.duration_since(*at) >= min_idle {
                    *owner = consumer.to_string();
                    *at = now;
                    if let Some(payload) = t.log.get(seq) {
                        out.push(Message { id: seq.to_string(), payload: payload.clone() });
                    }
                }
            }
            Ok(out)
        })
    }

    async fn ack(&self, topic: &str, group: &str, ids: &[String]) -> anyhow::Result<()> {
        let seqs = ids.iter().map(|id| seq_of(id)).collect::<anyhow::Result<Vec<_>>>()?;
        self.with(|topics| {
            let Some(t) = topics.get_mut(topic) else { return };
            if let Some(g) = t.groups.get_mut(group) {
                for s in &seqs {
                    g.pending.remove(s);
                }
            }
            // Drop what every group has received and acknowledged.
            let low = t
                .groups
                .values()
                .map(|g| g.pending.keys().next().copied().unwrap_or(g.next).min(g.next))
                .min()
                .unwrap_or(0);
            t.log = t.log.split_off(&low);
        });
        Ok(())
    }

    async fn pending(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        Ok(self.with(|topics| {
            topics
                .get(topic)
                .and_then(|t| t.groups.get(group))
                .map_or(0, |g| g.pending.len() as u64)
        }))
    }
}
