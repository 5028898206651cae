//! The REST routes, one file per resource: each maps its JSON shapes to the owning service's
//! RPCs and back, and documents itself for the OpenAPI page.
//!
//! - [`challenges`]: challenge routes and their JSON shapes.
//! - [`leaderboards`]: progress submission, leaderboard pages, "me", and the SSE stream.
//! - [`incentives`]: activity logging, the incentive catalog, employer incentives, awards
//!   and their SSE stream.
//! - [`scans`]: the Scan Event API feed and uploads, parcel states.

pub mod challenges;
pub mod incentives;
pub mod leaderboards;
pub mod scans;

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Every `$ref` under `value`, with where it was found.
    fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(target)) => {
                            out.push((at.to_string(), target.clone()))
                        }
                        _ => refs(v, &format!("{at}/{key}"), out),
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    refs(v, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn derived_timestamps_read_as_the_hand_mapped_ones_do() {
        use prost_types::Timestamp;
        let cases = [
            None,
            Some(Timestamp { seconds: 1_767_225_600, nanos: 0 }),
            Some(Timestamp { seconds: 1_767_225_600, nanos: 250_000_000 }),
            Some(Timestamp { seconds: 1_767_225_600, nanos: 1_000 }),
            Some(Timestamp { seconds: 1_767_225_600, nanos: 7 }),
            Some(Timestamp { seconds: -1, nanos: 999_999_999 }),
            Some(Timestamp { seconds: 253_402_300_800, nanos: 0 }),
            Some(Timestamp { seconds: 0, nanos: -1 }),
            Some(Timestamp { seconds: 0, nanos: 2_000_000_000 }),
            Some(Timestamp { seconds: i64::MAX, nanos: 0 }),
        ];
        let derived: Vec<String> =
            cases.iter().map(|ts| ewpm_proto::rest::rfc3339(ts.as_ref())).collect();
        let hand: Vec<String> = cases.iter().map(|ts| crate::rfc3339(*ts)).collect();
        assert_eq!(derived, hand);
        assert_eq!(
            derived[..5],
            [
                "",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00.250Z",
                "2026-01-01T00:00:00.000001Z",
                "2026-01-01T00:00:00.000000007Z"
            ]
        );
    }

    #[test]
    fn every_schema_the_document_refers_to_is_in_its_components() {
        let doc = serde_json::to_value(<crate::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut found = Vec::new();
        refs(&doc, "", &mut found);
        assert!(found.len() > 50, "{} refs", found.len());
        let dangling: Vec<_> = found
            .iter()
            .filter(|(_, target)| {
                target
                    .strip_prefix("#/components/schemas/")
                    .is_none_or(|name| !schemas.contains_key(name))
            })
            .collect();
        assert_eq!(dangling, Vec::<&(String, String)>::new());
    }

    #[test]
    fn every_json_body_of_the_document_has_a_schema() {
        let doc = serde_json::to_value(<crate::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
        let mut missing = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let request = op["requestBody"]["content"].as_object();
                let responses = op["responses"].as_object().unwrap();
                let bodies = request.into_iter().map(|c| ("request".to_string(), c)).chain(
                    responses
                        .iter()
                        .filter_map(|(code, r)| Some((code.clone(), r["content"].as_object()?))),
                );
                for (which, content) in bodies {
                    for (media, body) in content {
                        if media.contains("json") && body["schema"].is_null() {
                            missing.push(format!("{method} {path} {which} {media}"));
                        }
                    }
                }
            }
        }
        assert_eq!(missing, Vec::<String>::new());
    }
}
