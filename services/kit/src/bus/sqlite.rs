//! The embedded mode's durable bus: topics, consumer groups and pending entries in a SQLite
//! file of their own (`<data_dir>/bus.db`), so what `ewpm dev` acknowledged to a client is
//! still queued after the process is killed, and its own write lock never waits on the
//! services' database.
//!
//! One connection does everything (SQLite has one writer anyway; no lock upgrades, no busy
//! retries). Publishes are group-committed: concurrent publishers hand their messages to one
//! committer task, which writes whatever has gathered in one transaction and then answers
//! each of them. Blocked receivers of this process wake on publish; the file is not meant to
//! be shared with another process, nor opened twice at once.
//!
//! Every statement is a round trip to the connection's worker thread, and under load those
//! hand-offs, not SQLite's work, are most of the bus's cost (and the connection is the queue
//! every publisher and consumer of the file waits in): the bus spends as few as it can.
//! Since this process alone appends to the file, it knows each topic's last sequence number
//! and how far each group has received without asking SQLite: a receive with nothing new to
//! deliver (a woken consumer that another consumer of its group beat to the messages, a
//! consumer polling an idle topic) costs no statement, and receives of one group take turns,
//! so the one that lost the race finds that out in memory. Sequence numbers are handed out
//! in memory too, and triggers keep the counters in the file (`bus_topics.last_seq` follows
//! the messages inserted, a group's `next_seq` the messages delivered to it), so each step is
//! a single atomic statement: a gathering of plain publishes is one INSERT, a receive one
//! INSERT … RETURNING and one SELECT of the payloads, an ack one DELETE. Acknowledged
//! messages are trimmed at most once a second per topic (as on Redis).

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
    TransactionTrait, Value,
};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{Bus, Message, Once, wait_for_messages};

/// Publishes gathered into one transaction at most.
const MAX_GROUP_COMMIT: usize = 512;

/// One publish waiting for the committer.
struct Publish {
    topic: String,
    /// `Some((key, record, ttl))` for `publish_once`.
    once: Option<(String, Vec<u8>, Duration)>,
    payloads: Vec<Vec<u8>>,
    reply: oneshot::Sender<anyhow::Result<PublishResult>>,
}

enum PublishResult {
    Ids(Vec<String>),
    Existing(Vec<u8>),
}

/// See [`SqliteBus::received`].
type Received = tokio::sync::Mutex<Option<i64>>;

/// See [`SqliteBus::last_seq`].
type LastSeq = std::sync::Mutex<HashMap<String, i64>>;

/// Acknowledged messages are deleted at most this often per topic.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// The durable embedded bus.
pub struct SqliteBus {
    db: DatabaseConnection,
    publishes: mpsc::Sender<Publish>,
    notify: std::sync::Mutex<HashMap<String, Arc<Notify>>>,
    /// Each topic's last sequence number as committed (by this process: see the module doc);
    /// a topic absent has none. Raised by the committer, which hands the next ones out,
    /// before publishers are answered and receivers woken.
    last_seq: Arc<LastSeq>,
    /// When each topic was last trimmed of what every group acknowledged.
    trimmed: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// Per (topic, group), a sequence number through which the group has received every
    /// message (it only grows; `None` until a receive read the group from the file); its lock
    /// is held across a receive, so a group's receives take turns.
    received: std::sync::Mutex<HashMap<(String, String), Arc<Received>>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bus_topics (topic TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS bus_messages (
  topic TEXT NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (topic, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bus_groups (
  topic TEXT NOT NULL, grp TEXT NOT NULL, next_seq INTEGER NOT NULL, PRIMARY KEY (topic, grp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bus_pending (
  topic TEXT NOT NULL, grp TEXT NOT NULL, seq INTEGER NOT NULL, consumer TEXT NOT NULL,
  delivered_ms INTEGER NOT NULL, PRIMARY KEY (topic, grp, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bus_once (
  topic TEXT NOT NULL, key TEXT NOT NULL, record BLOB NOT NULL, expires_ms INTEGER NOT NULL,
  PRIMARY KEY (topic, key)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS bus_messages_last_seq AFTER INSERT ON bus_messages BEGIN
  INSERT INTO bus_topics (topic, last_seq) VALUES (NEW.topic, NEW.seq)
  ON CONFLICT (topic) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq);
END;
CREATE TRIGGER IF NOT EXISTS bus_pending_next_seq AFTER INSERT ON bus_pending BEGIN
  UPDATE bus_groups SET next_seq = MAX(next_seq, NEW.seq + 1)
  WHERE topic = NEW.topic AND grp = NEW.grp;
END;
";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

fn seq_of(id: &str) -> anyhow::Result<i64> {
    i64::try_from(super::seq_of(id)?).context("message id out of range")
}

impl SqliteBus {
    /// Opens (creating) the bus file at `path`.
    pub async fn open(path: &std::path::Path) -> anyhow::Result<Arc<Self>> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        let mut options = ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()));
        options.max_connections(1).min_connections(1).sqlx_logging(false).map_sqlx_sqlite_opts(
            |o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                // WAL + NORMAL: a commit is in the OS before it returns, so it survives the
                // process being killed (not a power cut).
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
            },
        );
        let db = Database::connect(options)
            .await
            .with_context(|| format!("open the bus file {}", path.display()))?;
        db.execute_unprepared(SCHEMA).await.context("create the bus tables")?;
        // The file belongs to one process: whatever was pending when it last stopped belongs
        // to consumers that are gone, so it may be reclaimed at once rather than after the
        // idle time.
        db.execute_unprepared("UPDATE bus_pending SET delivered_ms = 0")
            .await
            .context("release pending messages")?;
        let last_seq = Arc::new(LastSeq::default());
        read_last_seqs(&db, &last_seq).await?;
        let (tx, rx) = mpsc::channel(4096);
        let bus = Arc::new(Self {
            db: db.clone(),
            publishes: tx,
            notify: Default::default(),
            last_seq: last_seq.clone(),
            trimmed: Default::default(),
            received: Default::default(),
        });
        tokio::spawn(committer(db, rx, last_seq, Arc::downgrade(&bus)));
        Ok(bus)
    }

    /// The last sequence number committed on `topic` (0: none yet).
    fn last_seq(&self, topic: &str) -> i64 {
        last_seq_of(&self.last_seq, topic)
    }

    /// Whether `topic` is due for trimming now (and then not again for [`TRIM_EVERY`]).
    fn trim_due(&self, topic: &str) -> bool {
        let now = std::time::Instant::now();
        let mut trimmed = self.trimmed.lock().unwrap_or_else(|p| p.into_inner());
        match trimmed.get(topic) {
            Some(at) if now.duration_since(*at) < TRIM_EVERY => false,
            _ => {
                trimmed.insert(topic.to_string(), now);
                true
            }
        }
    }

    /// How far `group` of `topic` has received, as known in memory.
    fn received(&self, topic: &str, group: &str) -> Arc<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((topic.to_string(), group.to_string()))
            .or_default()
            .clone()
    }

    fn notify(&self, topic: &str) -> Arc<Notify> {
        self.notify
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(topic.to_string())
            .or_default()
            .clone()
    }

    async fn submit(
        &self,
        topic: &str,
        once: Option<(String, Vec<u8>, Duration)>,
        payloads: Vec<Vec<u8>>,
    ) -> anyhow::Result<PublishResult> {
        let (reply, answer) = oneshot::channel();
        self.publishes
            .send(Publish { topic: topic.to_string(), once, payloads, reply })
            .await
            .map_err(|_| anyhow::anyhow!("the bus committer stopped"))?;
        answer.await.map_err(|_| anyhow::anyhow!("the bus committer stopped"))?
    }

    async fn messages(
        &self,
        conn: &impl ConnectionTrait,
        topic: &str,
        seqs: &[i64],
    ) -> anyhow::Result<Vec<Message>> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut values: Vec<Value> = vec![topic.into()];
            values.extend(chunk.iter().map(|s| Value::from(*s)));
            let rows = conn
                .query_all_raw(stmt(
                    &format!(
                        "SELECT seq, payload FROM bus_messages WHERE topic = ? AND seq IN ({marks}) ORDER BY seq"
                    ),
                    values,
                ))
                .await?;
            for r in rows {
                let seq: i64 = r.try_get("", "seq")?;
                out.push(Message { id: seq.to_string(), payload: r.try_get("", "payload")? });
            }
        }
        Ok(out)
    }
}

/// Writes gathered publishes, one transaction per gathering, then answers and wakes.
/// The last sequence number committed on `topic` (0: none yet).
fn last_seq_of(last_seq: &LastSeq, topic: &str) -> i64 {
    last_seq.lock().unwrap_or_else(|p| p.into_inner()).get(topic).copied().unwrap_or(0)
}

/// Raises the topics' last sequence numbers to `seqs`.
fn raise_last_seqs(last_seq: &LastSeq, seqs: HashMap<String, i64>) {
    let mut last = last_seq.lock().unwrap_or_else(|p| p.into_inner());
    for (topic, seq) in seqs {
        let known = last.entry(topic).or_insert(0);
        *known = (*known).max(seq);
    }
}

/// Reads every topic's last sequence number from the file into `last_seq`.
async fn read_last_seqs(db: &DatabaseConnection, last_seq: &LastSeq) -> anyhow::Result<()> {
    let mut seqs = HashMap::new();
    for r in db
        .query_all_raw(stmt("SELECT topic, last_seq FROM bus_topics", Vec::new()))
        .await
        .context("read the topics")?
    {
        seqs.insert(r.try_get::<String>("", "topic")?, r.try_get::<i64>("", "last_seq")?);
    }
    raise_last_seqs(last_seq, seqs);
    Ok(())
}

async fn committer(
    db: DatabaseConnection,
    mut rx: mpsc::Receiver<Publish>,
    last_seq: Arc<LastSeq>,
    bus: std::sync::Weak<SqliteBus>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP_COMMIT {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let result = commit(&db, &batch, &last_seq).await;
        let topics: Vec<String> = batch.iter().map(|p| p.topic.clone()).collect();
        match result {
            Ok((results, last_seqs)) => {
                // Known before anyone hears of the messages: a receiver woken below, or
                // answered publisher's consumer, must not find them missing.
                raise_last_seqs(&last_seq, last_seqs);
                for (p, r) in batch.into_iter().zip(results) {
                    p.reply.send(Ok(r)).ok();
                }
            }
            Err(err) => {
                // The file is the truth about the counters (should anything but this
                // committer have appended, the next gathering must not reuse a number).
                if let Err(e) = read_last_seqs(&db, &last_seq).await {
                    tracing::warn!(error = format!("{e:#}"), "re-reading the bus counters failed");
                }
                let message = format!("{err:#}");
                for p in batch {
                    p.reply.send(Err(anyhow::anyhow!("publish: {message}"))).ok();
                }
            }
        }
        if let Some(bus) = bus.upgrade() {
            for t in topics {
                bus.notify(&t).notify_waiters();
            }
        }
    }
}

/// Rows per multi-row INSERT (3 or 4 bound values each, well under SQLite's limit).
const ROWS_PER_INSERT: usize = 500;

/// Writes `batch` atomically, numbering its messages after `last_seq` (which it leaves
/// alone); its results, and each topic's new last sequence number. Plain publishes that fit
/// one INSERT are that one statement; anything else is one transaction.
async fn commit(
    db: &DatabaseConnection,
    batch: &[Publish],
    last_seq: &LastSeq,
) -> anyhow::Result<(Vec<PublishResult>, HashMap<String, i64>)> {
    let rows: usize = batch.iter().map(|p| p.payloads.len()).sum();
    if batch.iter().all(|p| p.once.is_none()) && rows <= ROWS_PER_INSERT {
        let mut next: HashMap<&str, i64> = HashMap::new();
        let mut values: Vec<Value> = Vec::with_capacity(rows * 3);
        let mut results = Vec::with_capacity(batch.len());
        for p in batch {
            let seq =
                next.entry(p.topic.as_str()).or_insert_with(|| last_seq_of(last_seq, &p.topic));
            let mut ids = Vec::with_capacity(p.payloads.len());
            for payload in &p.payloads {
                *seq += 1;
                values.extend([
                    Value::from(p.topic.as_str()),
                    Value::from(*seq),
                    Value::from(payload.clone()),
                ]);
                ids.push(seq.to_string());
            }
            results.push(PublishResult::Ids(ids));
        }
        if rows > 0 {
            let marks = vec!["(?, ?, ?)"; rows].join(",");
            db.execute_raw(stmt(
                &format!("INSERT INTO bus_messages (topic, seq, payload) VALUES {marks}"),
                values,
            ))
            .await
            .context("publish")?;
        }
        let last = next.into_iter().map(|(t, s)| (t.to_string(), s)).collect();
        return Ok((results, last));
    }
    let tx = db.begin().await.context("begin publish")?;
    let now = now_ms();
    // Keys of `publish_once` already taken, one query per topic; a key taken twice within
    // this gathering goes to its first publisher.
    let mut taken: HashMap<(String, String), Vec<u8>> = HashMap::new();
    let mut once_by_topic: HashMap<&str, Vec<&str>> = HashMap::new();
    for p in batch {
        if let Some((key, _, _)) = &p.once {
            once_by_topic.entry(p.topic.as_str()).or_default().push(key.as_str());
        }
    }
    for (topic, keys) in &once_by_topic {
        for chunk in keys.chunks(ROWS_PER_INSERT) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut values: Vec<Value> = vec![(*topic).into(), now.into()];
            values.extend(chunk.iter().map(|k| Value::from(*k)));
            let rows = tx
                .query_all_raw(stmt(
                    &format!(
                        "SELECT key, record FROM bus_once WHERE topic = ? AND expires_ms > ? AND key IN ({marks})"
                    ),
                    values,
                ))
                .await?;
            for r in rows {
                taken.insert(
                    ((*topic).to_string(), r.try_get("", "key")?),
                    r.try_get("", "record")?,
                );
            }
        }
    }
    // Decide each publish, count messages per topic.
    let mut results: Vec<Option<PublishResult>> = Vec::with_capacity(batch.len());
    let mut counts: HashMap<&str, i64> = HashMap::new();
    let mut new_once: Vec<(&str, &str, &[u8], i64)> = Vec::new();
    for p in batch {
        if let Some((key, record, ttl)) = &p.once {
            let k = (p.topic.clone(), key.clone());
            if let Some(first) = taken.get(&k) {
                results.push(Some(PublishResult::Existing(first.clone())));
                continue;
            }
            taken.insert(k, record.clone());
            let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
            new_once.push((p.topic.as_str(), key.as_str(), record.as_slice(), expires));
        }
        *counts.entry(p.topic.as_str()).or_default() += p.payloads.len() as i64;
        results.push(None);
    }
    // Number the messages after each topic's last (the trigger bus_messages_last_seq
    // records the new last in the file).
    let mut next_seq: HashMap<&str, i64> = HashMap::new();
    let mut last_seqs: HashMap<String, i64> = HashMap::new();
    for (topic, n) in &counts {
        let last = last_seq_of(last_seq, topic);
        next_seq.insert(topic, last + 1);
        last_seqs.insert((*topic).to_string(), last + n);
    }
    let mut rows: Vec<(&str, i64, &[u8])> = Vec::new();
    for (p, result) in batch.iter().zip(results.iter_mut()) {
        if result.is_some() {
            continue;
        }
        let seq = next_seq.get_mut(p.topic.as_str()).context("reserved sequence")?;
        let mut ids = Vec::with_capacity(p.payloads.len());
        for payload in &p.payloads {
            rows.push((p.topic.as_str(), *seq, payload.as_slice()));
            ids.push(seq.to_string());
            *seq += 1;
        }
        *result = Some(PublishResult::Ids(ids));
    }
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let marks = vec!["(?, ?, ?)"; chunk.len()].join(",");
        let values: Vec<Value> = chunk
            .iter()
            .flat_map(|(t, seq, payload)| {
                [Value::from(*t), Value::from(*seq), Value::from(payload.to_vec())]
            })
            .collect();
        tx.execute_raw(stmt(
            &format!("INSERT INTO bus_messages (topic, seq, payload) VALUES {marks}"),
            values,
        ))
        .await?;
    }
    for chunk in new_once.chunks(ROWS_PER_INSERT) {
        let marks = vec!["(?, ?, ?, ?)"; chunk.len()].join(",");
        let values: Vec<Value> = chunk
            .iter()
            .flat_map(|(t, k, r, e)| {
                [Value::from(*t), Value::from(*k), Value::from(r.to_vec()), Value::from(*e)]
            })
            .collect();
        tx.execute_raw(stmt(
            &format!(
                "INSERT OR REPLACE INTO bus_once (topic, key, record, expires_ms) VALUES {marks}"
            ),
            values,
        ))
        .await?;
    }
    // Forget expired idempotency keys now and then.
    if now % 64 == 0 {
        tx.execute_raw(stmt("DELETE FROM bus_once WHERE expires_ms <= ?", vec![now.into()]))
            .await?;
    }
    tx.commit().await.context("commit publish")?;
    let results = results
        .into_iter()
        .map(|r| r.context("every publish decided"))
        .collect::<anyhow::Result<_>>()?;
    Ok((results, last_seqs))
}

#[async_trait]
impl Bus for SqliteBus {
    async fn publish(&self, topic: &str, payloads: &[Vec<u8>]) -> anyhow::Result<Vec<String>> {
        match self.submit(topic, None, payloads.to_vec()).await? {
            PublishResult::Ids(ids) => Ok(ids),
            PublishResult::Existing(_) => anyhow::bail!("a plain publish has no key"),
        }
    }

    async fn publish_once(
        &self,
        topic: &str,
        key: &str,
        record: &[u8],
        payload: &[u8],
        ttl: Duration,
    ) -> anyhow::Result<Once> {
        let once = Some((key.to_string(), record.to_vec(), ttl));
        Ok(match self.submit(topic, once, vec![payload.to_vec()]).await? {
            PublishResult::Ids(ids) => Once::Published(ids.into_iter().next().unwrap_or_default()),
            PublishResult::Existing(record) => Once::Existing(record),
        })
    }

    async fn ensure_group(&self, topic: &str, group: &str) -> anyhow::Result<()> {
        // A new group starts at the oldest message kept (or after the last one ever).
        self.db
            .execute_raw(stmt(
                "INSERT INTO bus_groups (topic, grp, next_seq) VALUES (?, ?, \
                   COALESCE((SELECT MIN(seq) FROM bus_messages WHERE topic = ?), \
                            (SELECT last_seq + 1 FROM bus_topics WHERE topic = ?), 1)) \
                 ON CONFLICT (topic, grp) DO NOTHING",
                vec![topic.into(), group.into(), topic.into(), topic.into()],
            ))
            .await
            .context("create group")?;
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
        let notify = self.notify(topic);
        let received = self.received(topic, group);
        wait_for_messages(&notify, block, || async {
            let mut received = received.lock().await;
            // Read after taking the turn: the group has received everything through
            // `*received`; if nothing was committed after that, there is nothing to deliver.
            let last = self.last_seq(topic);
            if received.is_some_and(|through| through >= last) {
                return Ok(Vec::new());
            }
            let now = now_ms();
            // Deliver, in one statement: the next `max` messages become pending for
            // `consumer`, the group's next_seq follows them (trigger bus_pending_next_seq),
            // and their payloads come back.
            let delivered = self
                .db
                .query_all_raw(stmt(
                    "INSERT OR REPLACE INTO bus_pending (topic, grp, seq, consumer, delivered_ms) \
                     SELECT m.topic, g.grp, m.seq, ?, ? FROM bus_groups g \
                     JOIN bus_messages m ON m.topic = g.topic AND m.seq >= g.next_seq \
                     WHERE g.topic = ? AND g.grp = ? ORDER BY m.seq LIMIT ? \
                     RETURNING seq, (SELECT payload FROM bus_messages p \
                       WHERE p.topic = bus_pending.topic AND p.seq = bus_pending.seq) AS payload",
                    vec![
                        consumer.into(),
                        now.into(),
                        topic.into(),
                        group.into(),
                        (max as i64).into(),
                    ],
                ))
                .await?;
            let mut out = delivered
                .iter()
                .map(|r| Ok((r.try_get::<i64>("", "seq")?, r.try_get::<Vec<u8>>("", "payload")?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            out.sort_unstable_by_key(|(seq, _)| *seq);
            if out.is_empty() && received.is_none() {
                // No group is an error, as on the other buses (groups are never removed, so
                // once is enough).
                let exists = self
                    .db
                    .query_one_raw(stmt(
                        "SELECT 1 AS one FROM bus_groups WHERE topic = ? AND grp = ?",
                        vec![topic.into(), group.into()],
                    ))
                    .await?;
                anyhow::ensure!(exists.is_some(), "no group {group} on {topic}");
            }
            // Delivery is in order from the group's next message: everything through the
            // last delivered one has been received; when nothing was, everything through
            // `last` (committed before this read began) had been.
            let through = out.last().map_or(last, |(seq, _)| *seq);
            *received = Some(received.map_or(through, |known| known.max(through)));
            Ok(out
                .into_iter()
                .map(|(seq, payload)| Message { id: seq.to_string(), payload })
                .collect())
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
        let now = now_ms();
        let idle_before = now - i64::try_from(min_idle.as_millis()).unwrap_or(i64::MAX / 2);
        let tx = self.db.begin().await.context("begin reclaim")?;
        let rows = tx
            .query_all_raw(stmt(
                "UPDATE bus_pending SET consumer = ?, delivered_ms = ? \
                 WHERE (topic, grp, seq) IN (SELECT topic, grp, seq FROM bus_pending \
                   WHERE topic = ? AND grp = ? AND delivered_ms <= ? ORDER BY seq LIMIT ?) \
                 RETURNING seq",
                vec![
                    consumer.into(),
                    now.into(),
                    topic.into(),
                    group.into(),
                    idle_before.into(),
                    (max as i64).into(),
                ],
            ))
            .await?;
        let mut seqs: Vec<i64> =
            rows.iter().map(|r| r.try_get::<i64>("", "seq")).collect::<Result<_, _>>()?;
        seqs.sort_unstable();
        let out = self.messages(&tx, topic, &seqs).await?;
        tx.commit().await.context("commit reclaim")?;
        Ok(out)
    }

    async fn ack(&self, topic: &str, group: &str, ids: &[String]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let seqs = ids.iter().map(|id| seq_of(id)).collect::<anyhow::Result<Vec<_>>>()?;
        // Each chunk alone: an ack is idempotent, and a half-done one is redone by the retry.
        for chunk in seqs.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut values: Vec<Value> = vec![topic.into(), group.into()];
            values.extend(chunk.iter().map(|s| Value::from(*s)));
            self.db
                .execute_raw(stmt(
                    &format!(
                        "DELETE FROM bus_pending WHERE topic = ? AND grp = ? AND seq IN ({marks})"
                    ),
                    values,
                ))
                .await?;
        }
        // Drop what every group of the topic has received and acknowledged, now and then.
        if self.trim_due(topic) {
            self.db
                .execute_raw(stmt(
                    "DELETE FROM bus_messages WHERE topic = ? AND seq < (SELECT MIN(low) FROM ( \
                       SELECT MIN(COALESCE((SELECT MIN(p.seq) FROM bus_pending p WHERE p.topic = g.topic AND p.grp = g.grp), g.next_seq), g.next_seq) AS low \
                       FROM bus_groups g WHERE g.topic = ? GROUP BY g.grp))",
                    vec![topic.into(), topic.into()],
                ))
                .await?;
        }
        Ok(())
    }

    async fn pending(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        let row = self
            .db
            .query_one_raw(stmt(
                "SELECT COUNT(*) AS n FROM bus_pending WHERE topic = ? AND grp = ?",
                vec![topic.into(), group.into()],
            ))
            .await?
            .context("count")?;
        Ok(row.try_get::<i64>("", "n")?.max(0) as u64)
    }

    async fn backlog(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        let row = self
            .db
            .query_one_raw(stmt(
                "SELECT COALESCE((SELECT last_seq FROM bus_topics WHERE topic = ?), 0) + 1 \
                   - COALESCE((SELECT next_seq FROM bus_groups WHERE topic = ? AND grp = ?), \
                              (SELECT last_seq FROM bus_topics WHERE topic = ?) + 1, 1) \
                   + (SELECT COUNT(*) FROM bus_pending WHERE topic = ? AND grp = ?) AS n",
                vec![
                    topic.into(),
                    topic.into(),
                    group.into(),
                    topic.into(),
                    topic.into(),
                    group.into(),
                ],
            ))
            .await?
            .context("backlog")?;
        Ok(row.try_get::<i64>("", "n")?.max(0) as u64)
    }

    fn durable(&self, _topic: &str) -> bool {
        true
    }
}
