//! End to end: named leaderboards (issue #14) through the REST edge against the real
//! leaderboard service, in `ewpm dev` as a user runs it: a weekly board defined, fed by
//! members and an admin, read in pages both ways with the caller's own place, ranked one and
//! several at a time, watched live with rank-change notices, corrected by voids, hidden by
//! privacy and withheld by an employer's minimum; and a challenge's board read through the
//! same routes while the challenge's own routes keep their JSON.

mod common;

use std::time::{Duration, Instant};

use common::start_dev;
use ewpm_kit::auth::Role;
use ewpm_testkit::{TEST_SECRET, bearer};
use reqwest::Method;
use serde_json::{Value, json};

/// The REST edge at `base`, called with full `Bearer …` values.
struct Rest {
    base: String,
    http: reqwest::Client,
}

/// An answer: status, `Location`, body (JSON, or the text).
#[derive(Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    body: Value,
}

impl Answer {
    /// Status and problem reason.
    fn problem(&self) -> (u16, &str) {
        (self.status, self.body["reason"].as_str().unwrap_or_default())
    }

    /// The fields a problem names.
    fn fields(&self) -> Vec<&str> {
        let errors = self.body["errors"].as_array().map(Vec::as_slice).unwrap_or_default();
        errors.iter().map(|e| e["field"].as_str().unwrap_or_default()).collect()
    }
}

impl Rest {
    async fn call(&self, method: Method, path: &str, auth: &str, body: Option<Value>) -> Answer {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).header("authorization", auth);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let location = response.headers().get("location").map(|v| v.to_str().unwrap().to_string());
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, location, body }
    }

    async fn get(&self, path: &str, auth: &str) -> Answer {
        self.call(Method::GET, path, auth, None).await
    }

    async fn post(&self, path: &str, auth: &str, body: Value) -> Answer {
        self.call(Method::POST, path, auth, Some(body)).await
    }

    async fn put(&self, path: &str, auth: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, auth, Some(body)).await
    }

    /// `GET path` until `done` holds for a 200 body (15 s at most); that body.
    async fn until(&self, path: &str, auth: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let answer = self.get(path, auth).await;
            if answer.status == 200 && done(&answer.body) {
                return answer.body;
            }
            assert!(Instant::now() < deadline, "GET {path} never got there: {answer:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A Server-Sent Events stream being read.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(rest: &Rest, path: &str, auth: &str) -> Self {
        let response = rest
            .http
            .get(format!("{}{path}", rest.base))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { response, buffer: String::new() }
    }

    /// The next event (name, JSON data), skipping keep-alive comments; `None` when the
    /// stream ended. Fails after 30 s without one.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_string());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                match name {
                    Some(name) => return Some((name, serde_json::from_str(&data).unwrap())),
                    None => continue,
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within 30 s; buffered {:?}", self.buffer))
                .unwrap();
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// Snapshots until one whose `notices` are not empty (30 s each at most); its notices.
    async fn notices(&mut self) -> Value {
        loop {
            let (name, data) = self.next().await.expect("the stream ended before a notice");
            assert_eq!(name, "snapshot", "{data}");
            if data["notices"].as_array().is_some_and(|n| !n.is_empty()) {
                return data["notices"].clone();
            }
        }
    }
}

/// An entry of the board routes, as they answer it (no subscore, names shown).
fn e(rank: i64, member: &str, score: f64, position: i64) -> Value {
    json!({"rank": rank, "member": member, "score": score, "subscore": 0.0,
           "position": position, "pseudonymous": false})
}

/// `notices` without their `gap` (a `passed` notice's gap is not the contract's).
fn without_gaps(notices: &Value) -> Vec<Value> {
    let mut notices = notices.as_array().unwrap().clone();
    for n in &mut notices {
        n.as_object_mut().unwrap().remove("gap");
    }
    notices
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_weekly_board_is_defined_fed_read_watched_corrected_hidden_and_withheld_over_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, base, _) = start_dev(dir.path(), &[("EWPM_AUTH__SECRET", TEST_SECRET)]).await;
    let rest = Rest { base, http: ewpm_testkit::http_client() };
    let admin = bearer("admin-1", Role::Admin, None);
    let hr_acme = bearer("hr-acme", Role::EmployerAdmin, Some("acme"));
    let hr_globex = bearer("hr-globex", Role::EmployerAdmin, Some("globex"));
    let ann = bearer("ann", Role::Employee, Some("acme"));
    let ben = bearer("ben", Role::Employee, Some("acme"));
    let cid = bearer("cid", Role::Employee, Some("acme"));

    // Definition: 201 + Location; a retry with the same definition answers it again (200); the id
    // taken by another definition 409; bad names 400 naming the field; members 403.
    let definition = json!({
        "boardId": "weekly-steps", "title": "Weekly steps", "operator": "sum", "order": "desc",
        "rankStyle": "competition", "reset": {"kind": "weekly", "timeZone": "Europe/Paris"},
        "employerId": "acme", "membersSubmit": true
    });
    let created = rest.post("/api/boards", &admin, definition.clone()).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.location.as_deref(), Some("/api/boards/board:weekly-steps"));
    let board = created.body.clone();
    assert_eq!(
        (
            &board["board"],
            &board["operator"],
            &board["order"],
            &board["subscoreOrder"],
            &board["rankStyle"],
            &board["reset"],
            &board["employerId"],
            &board["membersSubmit"],
            &board["owner"],
        ),
        (
            &json!("board:weekly-steps"),
            &json!("sum"),
            &json!("desc"),
            &json!(null),
            &json!("competition"),
            &json!({"kind": "weekly", "cron": null, "timeZone": "Europe/Paris"}),
            &json!("acme"),
            &json!(true),
            &json!("leaderboard"),
        )
    );
    let period = board["currentPeriod"].as_str().unwrap().to_string();
    assert!(period.len() == 8 && period[4..].starts_with("-W"), "an ISO week: {period}");
    assert!(board["nextResetTime"].is_string() && board["createTime"].is_string(), "{board}");
    let again = rest.post("/api/boards", &admin, definition.clone()).await;
    assert_eq!((again.status, &again.body["board"]), (200, &board["board"]));
    let mut other = definition.clone();
    other["title"] = json!("Other steps");
    assert_eq!(rest.post("/api/boards", &admin, other).await.status, 409);
    let bad = rest
        .post("/api/boards", &admin, json!({"boardId": "b", "operator": "max", "order": "up"}))
        .await;
    assert_eq!(
        (bad.problem(), bad.fields()),
        ((400, "INVALID_ARGUMENT"), vec!["operator", "order"])
    );
    let bad = rest.post("/api/boards", &admin, json!({"boardId": "Weekly Steps!"})).await;
    assert_eq!((bad.status, bad.fields()), (400, vec!["boardId"]));
    assert_eq!(rest.post("/api/boards", &ann, json!({"boardId": "mine"})).await.status, 403);
    // An employer admin defines boards of their own employer only.
    let night = rest
        .post("/api/boards", &hr_acme, json!({"boardId": "quiz-night", "title": "Quiz night"}))
        .await;
    assert_eq!((night.status, &night.body["employerId"]), (201, &json!("acme")), "{night:?}");
    let foreign = json!({"boardId": "globex-night", "employerId": "globex"});
    assert_eq!(rest.post("/api/boards", &hr_acme, foreign).await.status, 403);

    // Reading the definition and the periods.
    let read = rest.get("/api/boards/board:weekly-steps", &ann).await;
    assert_eq!((read.status, &read.body), (200, &board));
    assert_eq!(rest.get("/api/boards/board:no-such-board", &ann).await.status, 404);
    let periods = rest.get("/api/boards/board:weekly-steps/periods", &ann).await;
    assert_eq!(periods.status, 200, "{periods:?}");
    let current = &periods.body["periods"][0];
    assert_eq!(
        (&current["period"], &current["closed"], &current["endTime"]),
        (&json!(period), &json!(false), &board["nextResetTime"])
    );
    assert!(current["startTime"].is_string(), "{current}");
    let never = rest.get("/api/boards/board:quiz-night/periods", &ann).await;
    assert_eq!(
        never.body["periods"],
        json!([{"period": "all", "startTime": null, "endTime": null, "closed": false, "members": 0}])
    );

    // Scores: members their own (201), a retry 200, the same id with another body 409; an
    // admin for anyone; a member for someone else 403; a time too far ahead 400; a closed
    // period 422.
    let scores = "/api/boards/board:weekly-steps/scores";
    let first = rest.post(scores, &ann, json!({"score": 8000, "eventId": "ann-1"})).await;
    assert_eq!(
        (first.status, &first.body["period"], &first.body["created"]),
        (201, &json!(period), &json!(true)),
        "{first:?}"
    );
    assert!(first.body["entry"].is_null() || first.body["entry"]["member"] == "ann", "{first:?}");
    let retry = rest.post(scores, &ann, json!({"score": 8000, "eventId": "ann-1"})).await;
    assert_eq!((retry.status, &retry.body["created"]), (200, &json!(false)));
    let reused = rest.post(scores, &ann, json!({"score": 9000, "eventId": "ann-1"})).await;
    assert_eq!(reused.status, 409, "{reused:?}");
    assert_eq!(
        rest.post(scores, &ben, json!({"score": 12000, "eventId": "ben-1"})).await.status,
        201
    );
    assert_eq!(
        rest.post(scores, &cid, json!({"score": 7000, "eventId": "cid-1"})).await.status,
        201
    );
    let for_dan = json!({"member": "dan", "score": 500, "eventId": "dan-1"});
    assert_eq!(rest.post(scores, &admin, for_dan).await.status, 201);
    let for_ben = json!({"member": "ben", "score": 1, "eventId": "ann-for-ben"});
    assert_eq!(rest.post(scores, &ann, for_ben).await.status, 403);
    let ahead = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let late =
        rest.post(scores, &ann, json!({"score": 1, "eventId": "a", "occurredAt": ahead})).await;
    assert_eq!((late.status, late.fields()), (400, vec!["occurredAt"]));
    let weeks_ago = (chrono::Utc::now() - chrono::Duration::days(21)).to_rfc3339();
    let closed =
        rest.post(scores, &ann, json!({"score": 1, "eventId": "b", "occurredAt": weeks_ago})).await;
    assert_eq!(closed.problem(), (422, "PERIOD_CLOSED"), "{closed:?}");
    let missing = rest.post(scores, &ann, json!({"eventId": "c"})).await;
    assert_eq!((missing.status, missing.fields()), (400, vec!["score"]));

    // Pages both ways, the caller's own place beside them.
    let entries = "/api/boards/board:weekly-steps/entries";
    let page1 =
        rest.until(&format!("{entries}?pageSize=2"), &ann, |b| b["totalMembers"] == 4).await;
    assert_eq!(page1["entries"], json!([e(1, "ben", 12000.0, 0), e(2, "ann", 8000.0, 1)]));
    assert_eq!(
        (&page1["board"], &page1["prevPageToken"], &page1["period"], &page1["withheld"]),
        (&json!("board:weekly-steps"), &json!(""), &json!(period), &json!(false))
    );
    assert_eq!(
        (&page1["me"]["entry"], &page1["me"]["topPercent"], &page1["me"]["page"]),
        (&e(2, "ann", 8000.0, 1), &json!(50), &json!(1))
    );
    let next = page1["nextPageToken"].as_str().unwrap();
    assert!(!next.is_empty());
    let page2 = rest.get(&format!("{entries}?pageSize=2&pageToken={next}"), &ann).await;
    assert_eq!(page2.body["entries"], json!([e(3, "cid", 7000.0, 2), e(4, "dan", 500.0, 3)]));
    assert_eq!(page2.body["nextPageToken"], "");
    let prev = page2.body["prevPageToken"].as_str().unwrap();
    let back = rest.get(&format!("{entries}?pageSize=2&pageToken={prev}"), &ann).await;
    assert_eq!(back.body["entries"], page1["entries"]);
    let from3 = rest.get(&format!("{entries}?pageSize=2&startRank=3&period={period}"), &ann).await;
    assert_eq!(from3.body["entries"], page2.body["entries"]);
    let bad = rest.get(&format!("{entries}?startRank=third"), &ann).await;
    assert_eq!((bad.status, bad.fields()), (400, vec!["startRank"]));

    // One rank with its neighbours; several at once.
    let rank = rest.get("/api/boards/board:weekly-steps/rank?neighbours=1", &ann).await;
    assert_eq!(
        (rank.status, rank.body),
        (
            200,
            json!({"entry": e(2, "ann", 8000.0, 1),
                   "window": [e(1, "ben", 12000.0, 0), e(2, "ann", 8000.0, 1), e(3, "cid", 7000.0, 2)],
                   "totalMembers": 4, "topPercent": 50, "page": 1, "period": period})
        )
    );
    let dan = rest.get("/api/boards/board:weekly-steps/rank?member=dan&pageSize=2", &ann).await;
    assert_eq!((&dan.body["page"], &dan.body["topPercent"]), (&json!(2), &json!(100)));
    let nobody = rest.get("/api/boards/board:weekly-steps/rank?member=nobody", &ann).await;
    assert_eq!(nobody.status, 404);
    let team =
        rest.get("/api/boards/board:weekly-steps/ranks?member=cid&members=ann,nobody", &ann).await;
    assert_eq!(
        (team.status, team.body),
        (
            200,
            json!({"entries": [e(2, "ann", 8000.0, 1), e(3, "cid", 7000.0, 2)],
                   "totalMembers": 4, "period": period})
        )
    );

    // Live: ann watches with her place and notices; dan passes her, then she comes within
    // reach of him.
    let mut events = Events::open(
        &rest,
        "/api/boards/board:weekly-steps/stream?topN=3&withMe=true&neighbours=1&notifyPassed=true&notifyWithin=2000",
        &ann,
    )
    .await;
    let (name, first) = events.next().await.unwrap();
    assert_eq!(name, "snapshot");
    assert_eq!(
        (
            &first["entries"],
            &first["totalMembers"],
            &first["me"],
            &first["window"],
            &first["notices"]
        ),
        (
            &json!([e(1, "ben", 12000.0, 0), e(2, "ann", 8000.0, 1), e(3, "cid", 7000.0, 2)]),
            &json!(4),
            &e(2, "ann", 8000.0, 1),
            &json!([e(1, "ben", 12000.0, 0), e(2, "ann", 8000.0, 1), e(3, "cid", 7000.0, 2)]),
            &json!([]),
        )
    );
    assert!(first["snapshotTime"].as_str().is_some_and(|t| !t.is_empty()), "{first}");
    let passing = json!({"member": "dan", "score": 10000, "eventId": "dan-2"});
    assert_eq!(rest.post(scores, &admin, passing).await.status, 201);
    assert_eq!(
        without_gaps(&events.notices().await),
        [json!({"kind": "passed", "oldRank": 2, "newRank": 3, "other": "dan"})]
    );
    assert_eq!(
        rest.post(scores, &ann, json!({"score": 1000, "eventId": "ann-2"})).await.status,
        201
    );
    assert_eq!(
        events.notices().await,
        json!([{"kind": "within_reach", "oldRank": 3, "newRank": 3, "other": "dan", "gap": 1500.0}])
    );

    // Privacy: ben hides his name; others see his pseudonym, he and admins his id.
    let privacy = rest.get("/api/me/privacy", &ben).await;
    assert_eq!(
        (privacy.status, &privacy.body["member"], &privacy.body["hideName"]),
        (200, &json!("ben"), &json!(false))
    );
    let hidden = rest.put("/api/me/privacy", &ben, json!({"hideName": true})).await;
    assert_eq!((hidden.status, &hidden.body["hideName"]), (200, &json!(true)));
    let pseudonym = hidden.body["pseudonym"].as_str().unwrap().to_string();
    assert!(pseudonym.starts_with("anon-"), "{pseudonym}");
    let seen = rest.until(entries, &ann, |b| b["entries"][0]["pseudonymous"] == true).await;
    assert_eq!(
        (&seen["entries"][0]["member"], &seen["entries"][0]["score"]),
        (&json!(pseudonym), &json!(12000.0))
    );
    let own = rest.get(entries, &ben).await;
    assert_eq!(
        (&own.body["entries"][0]["member"], &own.body["entries"][0]["pseudonymous"]),
        (&json!("ben"), &json!(false))
    );
    assert_eq!(rest.get(entries, &admin).await.body["entries"][0]["member"], "ben");
    let missing = rest.put("/api/me/privacy", &ben, json!({})).await;
    assert_eq!((missing.status, missing.fields()), (400, vec!["hideName"]));
    assert_eq!(rest.put("/api/me/privacy", &ben, json!({"hideName": false})).await.status, 200);

    // Voids: admins only; a member's entry (201, then 200), one fact.
    let voids = "/api/boards/board:weekly-steps/voids";
    let by_ann = rest.post(voids, &ann, json!({"member": "cid", "reason": "revoked"})).await;
    assert_eq!(by_ann.status, 403);
    let voided =
        rest.post(voids, &admin, json!({"member": "cid", "reason": "revoked device data"})).await;
    assert_eq!((voided.status, voided.body), (201, json!({"created": true, "periods": [period]})));
    let again =
        rest.post(voids, &admin, json!({"member": "cid", "reason": "revoked device data"})).await;
    assert_eq!((again.status, &again.body["created"]), (200, &json!(false)));
    let fact =
        rest.post(voids, &admin, json!({"eventId": "dan-2", "reason": "duplicate upload"})).await;
    assert_eq!(fact.status, 201, "{fact:?}");
    let neither = rest.post(voids, &admin, json!({"reason": "nothing named"})).await;
    assert_eq!(neither.status, 400);
    let corrected = rest.until(entries, &admin, |b| b["totalMembers"] == 3).await;
    assert_eq!(
        corrected["entries"],
        json!([e(1, "ben", 12000.0, 0), e(2, "ann", 9000.0, 1), e(3, "dan", 500.0, 2)])
    );

    // The employer's minimum: below it, members see no entries.
    let settings = "/api/employers/acme/board-settings";
    let got = rest.get(settings, &hr_acme).await;
    assert_eq!((got.status, got.body), (200, json!({"employerId": "acme", "minMembers": 0})));
    assert_eq!(rest.get(settings, &ann).await.status, 403);
    assert_eq!(rest.get(settings, &hr_globex).await.status, 403);
    let set = rest.put(settings, &hr_acme, json!({"minMembers": 10})).await;
    assert_eq!((set.status, set.body), (200, json!({"employerId": "acme", "minMembers": 10})));
    let too_many = rest.put(settings, &hr_acme, json!({"minMembers": 20000})).await;
    assert_eq!((too_many.status, too_many.fields()), (400, vec!["minMembers"]));
    assert_eq!(rest.put(settings, &hr_acme, json!({})).await.fields(), ["minMembers"]);
    let withheld = rest.until(entries, &ann, |b| b["withheld"] == true).await;
    assert_eq!(withheld["entries"], json!([]));
    assert_eq!(rest.get(entries, &admin).await.body["entries"].as_array().map(Vec::len), Some(3));
    assert_eq!(rest.put(settings, &admin, json!({"minMembers": 0})).await.status, 200);
    rest.until(entries, &ann, |b| b["withheld"] == false && b["totalMembers"] == 3).await;

    // A stop ends the stream cleanly: no error event, just the end.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &dev.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    while let Some((name, data)) = events.next().await {
        assert_eq!(name, "snapshot", "{data}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while dev.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "ewpm dev did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_challenge_board_reads_through_the_board_routes_and_the_challenge_routes_keep_their_json()
{
    let dir = tempfile::tempdir().unwrap();
    let (_dev, base, _) = start_dev(dir.path(), &[("EWPM_AUTH__SECRET", TEST_SECRET)]).await;
    let rest = Rest { base, http: ewpm_testkit::http_client() };
    let admin = bearer("admin-1", Role::Admin, None);
    let ann = bearer("ann", Role::Employee, Some("acme"));
    let challenge = rest
        .post(
            "/api/challenges",
            &admin,
            json!({"name": "steps", "startTime": "2020-01-01T00:00:00Z",
                   "endTime": "2099-01-01T00:00:00Z", "goal": {"target": 1000, "unit": "steps"}}),
        )
        .await;
    assert_eq!(challenge.status, 201, "{challenge:?}");
    let id = challenge.body["id"].as_str().unwrap().to_string();
    let progress =
        rest.post(&format!("/api/challenges/{id}/progress"), &ann, json!({"value": 40})).await;
    assert_eq!(progress.status, 202);

    // The challenge's routes: exactly the JSON they had before the contract grew.
    let board = rest
        .until(&format!("/api/challenges/{id}/leaderboard"), &ann, |b| b["totalMembers"] == 1)
        .await;
    assert_eq!(
        board,
        json!({"challengeId": id, "totalMembers": 1,
               "entries": [{"rank": 1, "userId": "ann", "score": 40.0}]})
    );
    let me = rest.get(&format!("/api/challenges/{id}/leaderboard/me"), &ann).await;
    assert_eq!(
        me.body,
        json!({"challengeId": id, "me": {"rank": 1, "userId": "ann", "score": 40.0},
               "window": [{"rank": 1, "userId": "ann", "score": 40.0}], "totalMembers": 1,
               "topPercent": 100})
    );

    // The same board by its full name on the board routes.
    let name = format!("challenge:{id}");
    let definition = rest.get(&format!("/api/boards/{name}"), &ann).await;
    assert_eq!(definition.status, 200, "{definition:?}");
    assert_eq!(
        (
            &definition.body["board"],
            &definition.body["owner"],
            &definition.body["operator"],
            &definition.body["order"],
            &definition.body["rankStyle"],
            &definition.body["reset"]["kind"],
            &definition.body["currentPeriod"],
            &definition.body["nextResetTime"],
        ),
        (
            &json!(name),
            &json!("challenge"),
            &json!("sum"),
            &json!("desc"),
            &json!("competition"),
            &json!("never"),
            &json!("all"),
            &json!(null),
        )
    );
    let page = rest.get(&format!("/api/boards/{name}/entries"), &ann).await;
    assert_eq!(
        page.body,
        json!({"board": name, "entries": [e(1, "ann", 40.0, 0)], "nextPageToken": "",
               "prevPageToken": "", "totalMembers": 1,
               "me": {"entry": e(1, "ann", 40.0, 0), "topPercent": 100, "page": 1,
                      "pageToken": page.body["me"]["pageToken"]},
               "period": "all", "withheld": false})
    );
    let unknown =
        rest.get("/api/boards/challenge:0194d3c2-5b1e-7c4f-9a51-2d3e4f5a6b7c", &ann).await;
    assert_eq!(unknown.status, 404);

    // The OpenAPI page documents the board routes.
    let doc = rest.get("/openapi.json", &ann).await;
    assert_eq!(doc.body["paths"]["/api/boards/{board}/entries"]["get"]["tags"], json!(["boards"]));
}
