//! The REST routes, one file per resource: each maps its JSON shapes to the owning service's
//! RPCs and back, and documents itself for the OpenAPI page.
//!
//! - [`challenges`]: challenge routes and their JSON shapes.
//! - [`leaderboards`]: progress submission, leaderboard pages, "me", and the SSE stream.
//! - [`boards`]: named boards (`<kind>:<id>`): definitions, periods, scores, pages, ranks,
//!   the SSE stream with notices, voids, privacy, employer settings.
//! - [`incentives`]: activity logging, the incentive catalog, employer incentives, awards
//!   and their SSE stream.
//! - [`scans`]: the Scan Event API feed and uploads, parcel states.
//! - [`quizzes`]: live quizzes (authoring, hosting, the seed's join and update-score paths),
//!   the session's SSE stream and its WebSocket room ([`quizzes::room`]).
//! - [`engagement`]: match events in (one, or a batch), match metrics out (the seed's shape,
//!   the full snapshot, its SSE stream), stored events, replay.
//!
//! # REST shapes and proto messages
//!
//! A body that is exactly a proto message's proto3 JSON mapping (`json_name` keys, default
//! values emitted, Timestamps as RFC 3339, int64 as strings, enums by value name) is that
//! message: ewpm-proto derives `Serialize` and `ToSchema` for it (feature `rest`,
//! `REST_MESSAGES` in `proto/build.rs`, whose build fails if a field stops fitting). Every
//! other shape is written here and mapped by hand, because it differs on purpose:
//!
//! | REST shape | proto message | how |
//! |---|---|---|
//! | `SubmitProgressResponse` (was `AcceptedDto`) | progress `SubmitProgressResponse` | derived |
//! | `Award` (was `AwardDto`; also the `award` SSE data) | incentive `Award` | derived |
//! | `ListAwardsResponse` (was `AwardPage`) | incentive `ListAwardsResponse` | derived |
//! | `Goal` inside `ChallengeDto` (was `GoalDto`) | challenge `Goal` | derived |
//! | `GoalDto` (request `goal`) | challenge `Goal` | hand: same JSON, but serde names the type in 400s (`expected struct GoalDto`) |
//! | `ChallengeDto` | challenge `Challenge` | hand: `state` is `active` not `CHALLENGE_STATE_ACTIVE`; open `employerId` is `null`, not `""` |
//! | `ChallengePage` | `ListChallengesResponse` | hand: holds `ChallengeDto`s |
//! | `ActivePage`, `ActiveChallengeDto` | `ListActiveChallengesResponse` | hand: each challenge carries its `standing` (flattened), not a parallel `standings` list |
//! | `StandingDto` | challenge `Standing` | hand: `rank` (int64) is a number; no `challengeId`; `available: false` is `standing: null` |
//! | `CreateChallengeBody` | `CreateChallengeRequest` | hand: same names, but times parse with a 400 naming the field; `Idempotency-Key` header fallback |
//! | `UpdateChallengeBody`, `GoalPatch` | `UpdateChallengeRequest` | hand: a partial object that becomes `challenge` + `update_mask` |
//! | `ProgressBody` | `SubmitProgressRequest` | hand: challenge id from the path; time parse 400 names `occurredAt`; header key |
//! | `EntryDto` | leaderboard `LeaderboardEntry` | hand: `member` is `userId`; `rank` (int64) is a number; `subscore` and `pseudonymous` only when not 0/false; no `position` |
//! | `LeaderboardDto` (also the `snapshot` SSE data) | `GetLeaderboardResponse`, `WatchLeaderboardResponse` | hand: adds `challengeId`; `totalMembers` a number; `nextPageToken`/`prevPageToken` left out when empty, `period` when `all`, `withheld` when false; no `me` |
//! | `MeDto` | `GetRankResponse` | hand: `entry` is `me`; adds `challengeId`; numbers; a NOT_FOUND rank is `me: null`; `topPercent` only with `me`; `period` left out when `all` |
//! | `BoardDto`, `ResetDto` | `BoardDefinition`, `Reset` | hand: enums as lower-case words (`best`, `asc`, `dense`, `weekly`); no subscore order, empty `employerId`/`cron`/`timeZone` and unset times are `null` |
//! | `CreateBoardBody`, `ResetBody` | `CreateBoardRequest` | hand: flat (the definition's fields at the top, beside `boardId`); enum names with a 400 naming the field (`reset.kind`); service paths lose `definition.` |
//! | `PeriodDto`, `PeriodPage` | `Period`, `ListPeriodsResponse` | hand: `members` (int64) a number; unset times `null` |
//! | `ScoreBody`, `ScoreAnswerDto` | `SubmitScoreRequest`, `SubmitScoreResponse` | hand: board from the path; `score` required; time 400 names `occurredAt`; `Idempotency-Key` header fallback for `eventId`; 201 `created`, 200 a retry |
//! | `BoardEntryDto`, `MyPlaceDto`, `BoardPageDto`, `RankDto`, `RanksDto` | `LeaderboardEntry`, `MyPlace`, `GetLeaderboardResponse`, `GetRankResponse`, `GetRanksResponse` | hand: int64 ranks, positions, pages and counts are numbers; page tokens always present; `me` `null` off the board |
//! | `SnapshotDto`, `NoticeDto` (`snapshot` SSE data) | `WatchLeaderboardResponse`, `RankNotice` | hand: `kind` is `passed`/`within_reach`; `snapshotTime` RFC 3339; `me` `null` when not asked for or off the board |
//! | `VoidBody`, `VoidAnswerDto` | `VoidEntryRequest`, `VoidEntryResponse` | hand: board from the path; 201 `created`, 200 already void |
//! | `PrivacyBody`, `PrivacyDto` | `SetPrivacyRequest`, `Privacy` | hand: `hideName` required |
//! | `EmployerSettingsBody`, `EmployerSettingsDto` | `SetEmployerSettingsRequest`, `EmployerSettings` | hand: employer from the path; `minMembers` required |
//! | `ActivityBody`, `BirthBody` | `LogActivityRequest` | hand: `kind` by lower-case name (`birth` fixed for births); field-named 400s |
//! | `ActivityDto` | `LogActivityResponse` | hand: `kind` is `mood`, not `ACTIVITY_KIND_MOOD`; no value is `null` |
//! | `RuleDto` | incentive `Rule` | hand: same JSON when set, but it is also the request parser (400 text names its variants); an empty rule is `null` |
//! | `IncentiveDto`, `IncentivePage` | `Incentive`, `ListIncentivesResponse` | hand: `triggerKinds` by lower-case name |
//! | `CreateIncentiveBody`, `UpdateIncentiveBody` | `CreateIncentiveRequest`, `UpdateIncentiveRequest` | hand: lower-case kinds; update needs all three fields; id from the path |
//! | `EmployerIncentiveDto`, `EmployerIncentivePage` | `EmployerIncentive`, `ListEmployerIncentivesResponse` | hand: lower-case enums; unset `period`/`endTime` are `null` |
//! | `CreateEmployerIncentiveBody` | `CreateEmployerIncentiveRequest` | hand: employer from the path; lower-case enums; time 400s name the field |
//! | `ScanEventPage`, `ScanEventDto`, `DeviceDto`, `UserDto` | scan `ListScanEventsResponse`, `ScanEvent`, `Device`, `ScanUser` | hand: the seed's Scan Event API shape (`ScanEvents`, PascalCase, `CreatedDateTimeUtc`, `Type`); ids are numbers |
//! | `UploadBody`, `UploadAnswer` | `IngestScanEventsRequest`, `IngestScanEventsResponse` | hand: seed shape, lenient keys and numbers; `EventIds` are numbers |
//! | `ParcelDto`, `ParcelPage` | scan `Parcel`, `ListParcelsResponse` | hand: the seed's ParcelStates names (`createdDateTimeUtc`, `pickupTimeUtc`, `deliveryTimeUtc`); ids are numbers; unset times `null` |
//! | `ProjectorStatusDto` | `GetProjectorStatusResponse` | hand: numbers; `state` is `caught_up`, not `PROJECTOR_STATE_CAUGHT_UP`; unset times `null`; empty `lastError` left out |
//!
//! | `QuizDto`, `QuestionDto`, `QuizPage`, `SessionDto`, `ScoringDto`, `SessionViewDto`, `PlayQuestionDto`, `RevealedQuestionDto`, `QuestionResultDto`, `ParticipantDto`, `QuizStandingDto`, `TeamStandingDto`, `RevealDto`, `CloseQuestionDto`, `FinishedDto` | quiz `Quiz`, `Question`, `ListQuizzesResponse`, `Session`, `ScoringRules`, `GetSessionResponse`, `PlayQuestion`, `RevealedQuestion`, `QuestionResult`, `Participant`, `Standing`, `TeamStanding`, `RevealNextQuestionResponse`, `CloseQuestionResponse`, `FinishSessionResponse` | hand: enums as lower-case words (`single_choice`, `running`); empty `employerId`/`team` and unset `startTime`/`finishTime` are `null` |
//! | `CreateQuizBody`, `QuestionBody`, `CreateSessionBody`, `JoinBody` | `CreateQuizRequest`, `CreateSessionRequest`, `JoinSessionRequest` | hand: lower-case `kind` with a 400 naming `questions[i].kind`; `Idempotency-Key` header fallback; session id from the path |
//! | `UpdateScoreBody` (seed, snake_case), `AnswerBody`, `AnswerValue` | `SubmitAnswerRequest`, `Answer` | hand: `answer` is a number, an array of numbers or a string; every bad field named at once |
//! | `AnswerReceiptDto` | `SubmitAnswerResponse` | hand: `elapsedMs` (int64) is a number; a poll's `correct` is `null` |
//! | `QuizLeaderboardDto` | leaderboard `GetLeaderboardResponse` on `quiz:<id>` | hand: as `LeaderboardDto`, with `sessionId` |
//! | `QuizEvent` (SSE data, WebSocket messages), `TopEntryDto`, `ScoreUpdateDto` | `WatchSessionResponse`, `LeaderboardTop` | hand: a JSON object tagged by `type`; room-only `score_update`, `answer_receipt`, `error` |
//! | `NewEventDto`, `EventBody`, `BatchBody` | engagement `EventInput`, `IngestEventsRequest` | hand: read from JSON naming every bad field (`events[3].eventType`); `metadata` any JSON object → `Struct`; times RFC 3339; `Idempotency-Key` header fallback for `eventId` |
//! | `IngestedDto` | `IngestEventsResponse` (one event) | hand: the seed's `{"eventId"}`; 202 accepted, 200 `duplicate: true`, a rejection is a 409 problem |
//! | `BatchAnswerDto`, `EventResultDto` | `IngestEventsResponse`, `EventResult` | hand: `outcome` is `accepted`/`duplicate`/`rejected`; a rejected `eventId` is `null`; `field` in JSON naming |
//! | `MatchMetricsDto`, `PeakPeriodDto`, `PercentilesDto` | `GetMatchMetricsResponse`, `MatchMetrics` | hand: exactly the seed note's keys; int64 counts are numbers |
//! | `LiveMetricsDto`, `LivePeakDto`, `MinuteDto`, `WatermarkDto` | `MatchMetrics`, `PeakPeriod`, `MinuteCount`, `Watermark` | hand: `bucketing` is `wall_clock`/`match_clock`; unset watermark times `null`; `matchMinute` only when set |
//! | `MetricsPushDto`, `CorrectionDto` (`metrics` SSE data) | `WatchMatchResponse`, `Correction` | hand: the live snapshot's keys plus `corrections` |
//! | `ReplayDto` | `ReplayMatchResponse` | hand: `metrics` is the live snapshot |
//! | `MatchEventDto`, `MatchEventPage` | `MatchEvent`, `ListMatchEventsResponse` | hand: `metadata` a JSON object; empty optional ids `null` |
//!
//! Query strings (`ListQuery`, `ActiveQuery`, `BoardQuery`, `StreamLimitQuery`, `MeQuery`,
//! `PageQuery`, `IncentiveQuery`, `FeedQuery`, `ParcelQuery`, `QuizListQuery`, `WatchQuery`,
//! `ExportQuery`, `EventQuery`, `PeriodsQuery`, `EntriesQuery`, `RankQuery`, `RanksQuery`,
//! `StreamQuery`) are not JSON and have no proto message.

pub mod boards;
pub mod challenges;
pub mod engagement;
pub mod incentives;
pub mod leaderboards;
pub mod quizzes;
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
