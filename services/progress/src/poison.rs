//! Isolating the items of a batch that can never be written (poison), so one bad item does
//! not wedge a queue: the batch is split in halves, and halves of the halves that fail, until
//! each failing part is one item. Generic over the item and the write, so any batch consumer
//! can use it (the kit's consumer retries whole batches; this is the step after).
//!
//! Only failures about the data are isolated ([`is_permanent`]): any other (the database is
//! down) ends the isolation with that error, so the batch is retried whole later and nothing good is set
//! aside because of an outage. Parts written before are written again on the retry, so the
//! write must be idempotent (the progress writer's is: ids are primary keys).

use std::future::Future;

use sea_orm::{DbErr, RuntimeErr};

/// What isolating a batch found.
#[derive(Debug)]
pub struct Isolated<'a, T> {
    /// The items written, in batch order.
    pub written: Vec<&'a T>,
    /// The items that failed alone, with their errors, in batch order.
    pub rejected: Vec<(&'a T, anyhow::Error)>,
    /// What the successful writes returned, summed (rows inserted).
    pub inserted: u64,
}

/// Writes `items` with `write`, splitting every part that fails permanently (by `permanent`)
/// until the items that fail alone are isolated. A failure that is not permanent ends it.
pub async fn isolate<'a, T, F, Fut>(
    items: &'a [T],
    write: F,
    permanent: impl Fn(&anyhow::Error) -> bool,
) -> anyhow::Result<Isolated<'a, T>>
where
    F: Fn(&'a [T]) -> Fut,
    Fut: Future<Output = anyhow::Result<u64>>,
{
    let mut out = Isolated { written: Vec::new(), rejected: Vec::new(), inserted: 0 };
    // A stack of parts, the earliest on top, so results come in batch order.
    let mut parts = vec![items];
    while let Some(part) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        match write(part).await {
            Ok(n) => {
                out.inserted += n;
                out.written.extend(part);
            }
            Err(err) if !permanent(&err) => return Err(err),
            Err(err) => match part {
                [one] => out.rejected.push((one, err)),
                _ => {
                    let (first, second) = part.split_at(part.len() / 2);
                    parts.push(second);
                    parts.push(first);
                }
            },
        }
    }
    Ok(out)
}

/// Whether a database error is about the data of the rows written — the only kind splitting a
/// batch can isolate. A whitelist, so anything else (connection, shutdown, a busy or full
/// database, a missing table, a statement too large) is retried as before rather than setting
/// good entries aside: PostgreSQL SQLSTATE classes 22 (data exception) and 23 (integrity
/// constraint) and P0 (raised by a trigger or function); SQLite primary codes 18 (too big),
/// 19 (constraint, also a trigger's RAISE), 20 (type mismatch) and 25 (range).
pub fn is_permanent(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let Some(
            DbErr::Exec(RuntimeErr::SqlxError(sqlx)) | DbErr::Query(RuntimeErr::SqlxError(sqlx)),
        ) = cause.downcast_ref::<DbErr>()
        else {
            return false;
        };
        let Some(code) = sqlx.as_database_error().and_then(|db| db.code()) else {
            return false;
        };
        if code.len() == 5 {
            // A PostgreSQL SQLSTATE (SQLite's extended codes have at most 4 digits).
            ["22", "23", "P0"].iter().any(|class| code.starts_with(class))
        } else {
            // An SQLite extended result code: its low byte is the primary code.
            code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 18 | 19 | 20 | 25))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn write(part: &[u32]) -> anyhow::Result<u64> {
        if part.contains(&13) || part.contains(&7) {
            anyhow::bail!("unlucky")
        }
        Ok(part.len() as u64)
    }

    #[tokio::test]
    async fn the_bad_items_are_isolated_and_the_rest_written_in_order() {
        let items: Vec<u32> = (0..20).collect();
        let out = isolate(&items, write, |_| true).await.unwrap();
        let good: Vec<u32> = (0..20).filter(|i| *i != 7 && *i != 13).collect();
        assert_eq!(out.written.into_iter().copied().collect::<Vec<_>>(), good);
        assert_eq!(
            out.rejected.iter().map(|(i, e)| (**i, e.to_string())).collect::<Vec<_>>(),
            vec![(7, "unlucky".to_string()), (13, "unlucky".to_string())]
        );
        assert_eq!(out.inserted, 18);
    }

    #[tokio::test]
    async fn a_transient_failure_ends_the_isolation_with_its_error() {
        let items: Vec<u32> = (5..9).collect();
        let err = isolate(&items, write, |_| false).await;
        assert_eq!(err.map(|o| o.inserted).map_err(|e| e.to_string()), Err("unlucky".into()));
        let clean: Vec<u32> = vec![1, 2];
        let out = isolate(&clean, write, |_| false).await.unwrap();
        assert_eq!((out.written.len(), out.rejected.len(), out.inserted), (2, 0, 2));
    }

    #[test]
    fn an_error_that_is_not_the_database_answering_is_not_permanent() {
        assert!(!is_permanent(&anyhow::anyhow!("connection reset")));
        assert!(!is_permanent(&anyhow::Error::new(DbErr::ConnectionAcquire(
            sea_orm::error::ConnAcquireErr::Timeout
        ))));
    }
}
