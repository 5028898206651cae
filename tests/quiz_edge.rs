//! End to end: a live quiz played through the REST edge and its WebSocket room against the
//! real quiz service, in `ewpm dev` as a user runs it: the seed's paths and statuses, the
//! resource paths, the room's events (no correct answer before a question closes), answers
//! over the socket, and a concurrent double answer of which exactly one is taken.

mod common;

use std::time::{Duration, Instant};

use common::{Rest, start_dev};
use ewpm_kit::auth::Role;
use ewpm_testkit::{TEST_SECRET, bearer};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Whether `value` holds a key named like an answer anywhere.
fn holds_an_answer(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(k, v)| {
            ["correctChoices", "acceptedAnswers", "correct_choices", "accepted_answers"]
                .contains(&k.as_str())
                || holds_an_answer(v)
        }),
        Value::Array(items) => items.iter().any(holds_an_answer),
        _ => false,
    }
}

/// Messages from the room until one of type `kind` (returned last), within 15 s.
async fn until(socket: &mut Socket, kind: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no `{kind}` message within 15 s; saw {seen:?}"))
            .unwrap_or_else(|| panic!("the room closed before a `{kind}` message; saw {seen:?}"))
            .unwrap();
        let Message::Text(text) = message else { continue };
        let value: Value = serde_json::from_str(&text).unwrap();
        let done = value["type"] == kind;
        seen.push(value);
        if done {
            return seen;
        }
    }
}

fn problem(answer: &(u16, Value)) -> (u16, &str) {
    (answer.0, answer.1["reason"].as_str().unwrap_or_default())
}

#[tokio::test]
async fn a_live_quiz_plays_over_the_seed_paths_the_api_and_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, base, _) = start_dev(dir.path(), &[("EWPM_AUTH__SECRET", TEST_SECRET)]).await;
    ewpm_kit::install_tls_provider();
    let rest = Rest { base: base.clone(), http: reqwest::Client::new() };
    let admin = bearer("admin-1", Role::Admin, None);
    let ann = bearer("ann", Role::Employee, None);
    let ben = bearer("ben", Role::Employee, None);
    let cid = bearer("cid", Role::Employee, None);
    let dan = bearer("dan", Role::Employee, None);

    // Authoring: a quiz of three questions, and another quiz for a foreign question.
    let (status, quiz) = rest
        .post(
            "/api/quizzes",
            &admin,
            json!({"title": "Friday quiz", "questions": [
                {"text": "2 + 2?", "kind": "single_choice", "choices": ["3", "4", "5"],
                 "correctChoices": [1], "timeLimitSecs": 120},
                {"text": "Even numbers?", "kind": "multiple_choice", "choices": ["2", "3", "4"],
                 "correctChoices": [0, 2], "timeLimitSecs": 120},
                {"text": "Capital of France?", "kind": "short_text",
                 "acceptedAnswers": ["Paris"], "timeLimitSecs": 120}
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{quiz}");
    let questions: Vec<String> = quiz["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(questions.len(), 3);
    assert_eq!(quiz["questions"][0]["correctChoices"], json!([1]));
    let (status, other) = rest
        .post(
            "/api/quizzes",
            &admin,
            json!({"title": "Other", "questions": [{"text": "?", "kind": "poll",
                   "choices": ["a", "b"]}]}),
        )
        .await;
    assert_eq!(status, 201, "{other}");
    let foreign = other["questions"][0]["id"].as_str().unwrap().to_string();
    let bad_kind = rest
        .post("/api/quizzes", &admin, json!({"title": "x", "questions": [{"kind": "essay"}]}))
        .await;
    assert_eq!((bad_kind.0, &bad_kind.1["errors"][0]["field"]), (400, &json!("questions[0].kind")));
    let (status, page) = rest.get("/api/quizzes?pageSize=10", &admin).await;
    assert_eq!((status, page["quizzes"].as_array().map(Vec::len)), (200, Some(2)));
    let (status, got) =
        rest.get(&format!("/api/quizzes/{}", quiz["id"].as_str().unwrap()), &admin).await;
    assert_eq!((status, &got["questions"][2]["acceptedAnswers"]), (200, &json!(["Paris"])));

    // A session, scheduled: not joinable yet (409, the session's state).
    let (status, session) = rest
        .post("/api/quiz-sessions", &admin, json!({"quizId": quiz["id"], "lateJoin": true}))
        .await;
    assert_eq!((status, &session["state"]), (201, &json!("scheduled")), "{session}");
    let id = session["id"].as_str().unwrap().to_string();
    let join = |who: String| {
        let rest = &rest;
        let path = format!("/quiz-session/{id}/join");
        async move { rest.post(&path, &who, json!({})).await }
    };
    assert_eq!(problem(&join(ann.clone()).await), (409, "SESSION_NOT_JOINABLE"));
    let (status, opened) =
        rest.post(&format!("/api/quiz-sessions/{id}/open"), &admin, json!({})).await;
    assert_eq!((status, &opened["state"]), (200, &json!("open")));

    // Joins: the seed's path and the resource path; a second join 409; unknown session 400.
    let (status, me) = join(ann.clone()).await;
    assert_eq!((status, &me["userId"], &me["sessionId"]), (200, &json!("ann"), &json!(id)));
    let (status, _) = rest.post(&format!("/api/quiz-sessions/{id}/join"), &ben, json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = rest.post(&format!("/api/quiz-sessions/{id}/join"), &dan, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(problem(&join(ann.clone()).await), (409, "ALREADY_JOINED"));
    let unknown = uuid::Uuid::new_v4();
    let answer = rest.post(&format!("/quiz-session/{unknown}/join"), &ann, json!({})).await;
    assert_eq!(problem(&answer), (400, "SESSION_NOT_FOUND"));
    let answer = rest.post("/quiz-session/not-a-uuid/join", &ann, json!({})).await;
    assert_eq!(answer.0, 400);

    // Ann's room: the token in the query, the session first.
    let url = format!(
        "{}/api/quiz-sessions/{id}/ws?access_token={}",
        base.replace("http://", "ws://"),
        ann.trim_start_matches("Bearer ")
    );
    let (mut room, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);
    let first = until(&mut room, "session").await;
    let mut history = first.clone();
    assert_eq!(first.last().unwrap()["session"]["id"], json!(id));
    // Dan's room, with the header: he is connected and never answers the first question, so
    // the service does not close it early ("everyone connected answered").
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "{}/api/quiz-sessions/{id}/ws",
            base.replace("http://", "ws://")
        ))
        .unwrap();
    request.headers_mut().insert("authorization", dan.parse().unwrap());
    let (mut dans_room, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    until(&mut dans_room, "session").await;
    // The same events as Server-Sent Events.
    let mut sse = rest
        .http
        .get(format!("{base}/api/quiz-sessions/{id}/stream"))
        .header("authorization", &ben)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let chunk = tokio::time::timeout(Duration::from_secs(10), sse.chunk()).await.unwrap().unwrap();
    let text = String::from_utf8(chunk.unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: session\ndata: {"), "{text}");
    drop(sse);

    let (status, started) =
        rest.post(&format!("/api/quiz-sessions/{id}/start"), &admin, json!({})).await;
    assert_eq!((status, &started["state"]), (200, &json!("running")));
    let early = json!({"quiz_session_id": id, "question_id": questions[0], "answer": 1});
    assert_eq!(
        problem(&rest.post("/update-score", &ann, early).await),
        (400, "QUESTION_NOT_REVEALED")
    );

    // The first question: revealed to the room without its answer.
    let (status, revealed) =
        rest.post(&format!("/api/quiz-sessions/{id}/reveal"), &admin, json!({})).await;
    assert_eq!((status, &revealed["question"]["id"]), (200, &json!(questions[0])), "{revealed}");
    let seen = until(&mut room, "question_revealed").await;
    history.extend(seen.clone());
    let event = seen.last().unwrap();
    assert_eq!(event["question"]["id"], json!(questions[0]));
    assert_eq!(event["question"]["choices"], json!(["3", "4", "5"]));
    assert!(!holds_an_answer(event), "{event}");
    assert!(!seen.iter().any(holds_an_answer), "{seen:?}");

    // The seed's answer rules.
    let body = |question: &str, answer: Value| json!({"quiz_session_id": id, "question_id": question, "answer": answer});
    let answer = rest.post("/update-score", &cid, body(&questions[0], json!(1))).await;
    assert_eq!(problem(&answer), (403, "NOT_A_PARTICIPANT"));
    let answer = rest.post("/update-score", &ann, body(&foreign, json!(0))).await;
    assert_eq!(problem(&answer), (400, "QUESTION_NOT_IN_QUIZ"));
    let answer = rest.post("/update-score", &ann, json!({"answer": 1})).await;
    let fields: Vec<&str> = answer.1["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!((answer.0, fields), (400, vec!["quiz_session_id", "question_id"]));
    let answer = rest.post("/update-score", &ann, body(&questions[0], json!({"x": 1}))).await;
    assert_eq!((answer.0, &answer.1["errors"][0]["field"]), (400, &json!("answer")));

    // Ann answers in the room: the receipt and her score update.
    let message = json!({"type": "answer", "questionId": questions[0], "answer": 1});
    room.send(Message::text(message.to_string())).await.unwrap();
    let seen = until(&mut room, "answer_receipt").await;
    history.extend(seen.clone());
    let receipt = &seen.last().unwrap()["receipt"];
    assert_eq!(receipt["correct"], true, "{receipt}");
    let points = receipt["points"].as_f64().unwrap();
    assert!(points > 0.0, "{receipt}");
    let update = match seen.iter().find(|m| m["type"] == "score_update") {
        Some(update) => update.clone(),
        None => {
            let seen = until(&mut room, "score_update").await;
            history.extend(seen.clone());
            seen.last().unwrap().clone()
        }
    };
    assert_eq!(update["update"]["score"], receipt["score"]);
    // A second answer: 400 on the seed path, and the same problem in the room.
    let answer = rest.post("/update-score", &ann, body(&questions[0], json!(0))).await;
    assert_eq!(problem(&answer), (400, "ALREADY_ANSWERED"));
    room.send(Message::text(message.to_string())).await.unwrap();
    let seen = until(&mut room, "error").await;
    history.extend(seen.clone());
    let refused = seen.last().unwrap().clone();
    assert_eq!(
        (&refused["problem"]["status"], &refused["problem"]["reason"]),
        (&json!(400), &json!("ALREADY_ANSWERED"))
    );
    // The room answers garbage and stays open.
    room.send(Message::text("{not json")).await.unwrap();
    let seen = until(&mut room, "error").await;
    history.extend(seen.clone());
    let refused = seen.last().unwrap().clone();
    assert_eq!(refused["problem"]["status"], 400);

    // Ben answers twice at once: exactly one is taken.
    let path = format!("/api/quiz-sessions/{id}/answers");
    let twice = futures::future::join(
        rest.post(&path, &ben, json!({"questionId": questions[0], "answer": 0})),
        rest.post(&path, &ben, json!({"questionId": questions[0], "answer": 1})),
    )
    .await;
    let mut outcomes = [problem(&twice.0), problem(&twice.1)];
    outcomes.sort_unstable();
    assert_eq!(outcomes, [(200, ""), (400, "ALREADY_ANSWERED")], "{twice:?}");

    // The host closes it: the result, in the REST answer and in the room.
    let (status, closed) =
        rest.post(&format!("/api/quiz-sessions/{id}/close-question"), &admin, json!({})).await;
    assert_eq!(
        (status, &closed["question"]["result"]["correctChoices"]),
        (200, &json!([1])),
        "{closed}"
    );
    let seen = until(&mut room, "question_closed").await;
    history.extend(seen.clone());
    let event = seen.last().unwrap().clone();
    assert_eq!(event["question"]["id"], json!(questions[0]));
    assert_eq!(
        (&event["result"]["correctChoices"], &event["result"]["answered"]),
        (&json!([1]), &json!(2))
    );
    let answer = rest.post("/update-score", &ann, body(&questions[0], json!(1))).await;
    assert_eq!(answer.0, 400);

    // Dan never answered: the room told him the result too.
    let event = until(&mut dans_room, "question_closed").await.pop().unwrap();
    assert_eq!(event["result"]["correctChoices"], json!([1]));

    // The leaderboard reaches the room with ann's points.
    let has_anns_points = |m: &Value| {
        m["type"] == "leaderboard"
            && m["entries"].as_array().is_some_and(|entries| {
                entries.iter().any(|e| e["userId"] == "ann" && e["score"].as_f64() == Some(points))
            })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !history.iter().any(has_anns_points) {
        assert!(Instant::now() < deadline, "no leaderboard with ann's points: {history:?}");
        history.extend(until(&mut room, "leaderboard").await);
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, board) = rest.get(&format!("/api/quiz-sessions/{id}/leaderboard"), &ann).await;
        assert_eq!((status, &board["sessionId"]), (200, &json!(id)), "{board}");
        let entries = board["entries"].as_array().unwrap();
        if entries.iter().any(|e| e["userId"] == "ann" && e["score"].as_f64() == Some(points)) {
            break;
        }
        assert!(Instant::now() < deadline, "ann's points are not on the board: {board}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unknown_board = rest.get(&format!("/api/quiz-sessions/{unknown}/leaderboard"), &ann).await;
    assert_eq!(problem(&unknown_board), (404, "SESSION_NOT_FOUND"));

    // Multiple choice and short text, over the resource path.
    rest.post(&format!("/api/quiz-sessions/{id}/reveal"), &admin, json!({})).await;
    let (status, receipt) =
        rest.post(&path, &ann, json!({"questionId": questions[1], "answer": [0, 2]})).await;
    assert_eq!((status, &receipt["correct"]), (200, &json!(true)), "{receipt}");
    rest.post(&format!("/api/quiz-sessions/{id}/reveal"), &admin, json!({})).await;
    let (status, receipt) =
        rest.post(&path, &ann, json!({"questionId": questions[2], "answer": " paris "})).await;
    assert_eq!((status, &receipt["correct"]), (200, &json!(true)), "{receipt}");

    // The end: standings, the room's `finished`, the CSV.
    let (status, finished) =
        rest.post(&format!("/api/quiz-sessions/{id}/finish"), &admin, json!({})).await;
    assert_eq!((status, &finished["session"]["state"]), (200, &json!("finished")), "{finished}");
    assert_eq!(finished["standings"][0]["userId"], "ann");
    let seen = until(&mut room, "finished").await;
    history.extend(seen.clone());
    let event = seen.last().unwrap().clone();
    assert_eq!(event["standings"][0]["userId"], "ann");
    // The session's stream ends after `finished`: the room closes normally.
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match room.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the room closes within 10 s of `finished`")
    .expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1000, "{close:?}");
    assert_eq!(problem(&join(cid.clone()).await), (409, "SESSION_NOT_JOINABLE"));
    let (status, view) = rest.get(&format!("/api/quiz-sessions/{id}"), &ann).await;
    assert_eq!((status, &view["me"]["answered"]), (200, &json!(3)), "{view}");
    let response = rest
        .http
        .get(format!("{base}/api/quiz-sessions/{id}/results.csv?kind=participants"))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = response.text().await.unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.lines().nth(1).unwrap().contains("ann"), "{csv}");
    let answer =
        rest.get(&format!("/api/quiz-sessions/{id}/results.csv?kind=everything"), &admin).await;
    assert_eq!((answer.0, &answer.1["errors"][0]["field"]), (400, &json!("kind")));
}
