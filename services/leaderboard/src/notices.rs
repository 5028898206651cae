//! Change notices of boards ("board X changed", from the applier to every process that
//! watches X): the kit's [`ewpm_kit::notices`] on channels `<prefix>lb:changed:<board>`.

pub use ewpm_kit::notices::{MemoryNotices, Notices, RedisNotices, Subscription};

/// The channel namespace of board notices.
pub const NAMESPACE: &str = "lb:changed:";

/// Board notices over Redis pub/sub (mesh mode); channel names start with `prefix` (empty in
/// production; per test in tests).
pub async fn redis(url: &str, prefix: &str) -> anyhow::Result<RedisNotices> {
    RedisNotices::connect(url, prefix, NAMESPACE).await
}
