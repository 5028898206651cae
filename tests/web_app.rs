//! The web app the edge serves at `/`, in a real headless Chromium (Debian's `chromium`,
//! which `scripts/test` installs where missing) driven over the DevTools protocol, against
//! `ewpm dev` as a user runs it: the sign-in link `ewpm dev` prints, every page loading with
//! no console error, a progress submission reaching an open leaderboard page, a quiz played
//! by a host and a participant in two browser contexts, a match dashboard and awards updating
//! live, and a phone-sized screen. Screenshots of each page are kept under
//! `target/tmp/screenshots/`.
//!
//! Beside it, the edge's side of the app over plain HTTP: compression, caching, the page's
//! security headers, and the quiz room's token carried as a WebSocket subprotocol.

mod common;

use std::{
    io::Read,
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{Rest, start_dev, start_dev_on};
use ewpm_kit::auth::Role;
use ewpm_testkit::{TEST_SECRET, bearer, browser::Browser, browser::Page, free_port};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

const WAIT: Duration = Duration::from_secs(15);

/// A user id that is markup.
const HOSTILE: &str = r#"<img src=x onerror="window.pwned=1">"#;

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

/// The link `ewpm dev` printed for `who` (`employee` or `admin`).
fn printed_link(dir: &std::path::Path, who: &str) -> String {
    let banner = std::fs::read_to_string(dir.join("stdout")).unwrap();
    banner
        .lines()
        .find_map(|l| l.trim().strip_prefix(who).map(|rest| rest.trim().to_string()))
        .filter(|link| link.contains("/#token="))
        .unwrap_or_else(|| panic!("no {who} link in the banner:\n{banner}"))
}

/// Fails with the page's console errors, if it logged any.
fn no_console_errors(page: &Page, name: &str) {
    let errors = page.console_errors();
    assert!(errors.is_empty(), "{name}: console errors: {errors:#?}");
}

async fn shot(page: &Page, name: &str) {
    page.screenshot(&screenshots().join(format!("{name}.png"))).await.unwrap();
}

/// Labels, names and overflow a keyboard or screen-reader user and a phone depend on.
async fn accessible(page: &Page, name: &str) {
    let problems = page
        .eval(
            r#"(() => {
              const out = [];
              for (const el of document.querySelectorAll('input, textarea, select')) {
                if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')) out.push('unlabelled ' + (el.id || el.outerHTML));
              }
              for (const el of document.querySelectorAll('button, a[href]')) {
                if (!el.textContent.trim() && !el.getAttribute('aria-label')) out.push('nameless ' + el.outerHTML);
              }
              if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push('scrolls sideways: ' + document.documentElement.scrollWidth + ' > ' + window.innerWidth);
              if (!document.documentElement.lang) out.push('no lang');
              // WCAG AA contrast of every visible text: 4.5:1, or 3:1 for large text.
              const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
              const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
                .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
              const background = (el) => {
                for (; el; el = el.parentElement) {
                  const c = rgb(getComputedStyle(el).backgroundColor);
                  if (c.length === 3 || c[3] > 0) return c.slice(0, 3);
                }
                return [255, 255, 255];
              };
              for (const el of document.querySelectorAll('body *')) {
                const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
                if (!own || el.closest('[disabled], [hidden]') || !el.getClientRects().length) continue;
                const style = getComputedStyle(el);
                const size = parseFloat(style.fontSize);
                const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
                const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(background(el))];
                const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
                if (ratio < (large ? 3 : 4.5)) out.push(`contrast ${ratio.toFixed(2)}: ${el.tagName} "${el.textContent.trim().slice(0, 30)}"`);
              }
              if (!document.title) out.push('no title');
              return out;
            })()"#,
        )
        .await
        .unwrap();
    assert_eq!(problems, json!([]), "{name}: accessibility");
}

#[tokio::test]
async fn the_edge_serves_the_app_compressed_revalidated_and_locked_down() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, base, _) = start_dev(dir.path(), &[("EWPM_AUTH__SECRET", TEST_SECRET)]).await;
    let http = ewpm_testkit::http_client();

    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/app/app.js">"#), "{html}");

    for path in ["/app/app.js", "/app/app.css"] {
        let plain = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(plain.status(), 200, "{path}");
        assert!(plain.headers().get("content-encoding").is_none(), "{path}");
        let etag = plain.headers()["etag"].clone();
        assert_eq!(plain.headers()["cache-control"], "no-cache");
        let plain = plain.bytes().await.unwrap();
        let zipped = http
            .get(format!("{base}{path}"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(zipped.headers()["content-encoding"], "gzip", "{path}");
        let zipped = zipped.bytes().await.unwrap();
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&zipped[..]).read_to_end(&mut unzipped).unwrap();
        assert_eq!(unzipped, plain, "{path}: gzip is the same file");
        assert!(zipped.len() * 2 < plain.len(), "{path}: {} → {}", plain.len(), zipped.len());
        let again =
            http.get(format!("{base}{path}")).header("if-none-match", etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    let missing = http.get(format!("{base}/app/nothing.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");

    // The quiz room takes its token as a subprotocol (what the app sends), answers with the
    // room's protocol, and refuses a forged one before the upgrade.
    let rest = Rest { base: base.clone(), http: http.clone() };
    let admin = bearer("admin-1", Role::Admin, None);
    let quiz = rest
        .post_ok(
            "/api/quizzes",
            &admin,
            json!({"title": "Q", "questions": [{"text": "?", "kind": "poll", "choices": ["a", "b"]}]}),
        )
        .await;
    let session = rest.post_ok("/api/quiz-sessions", &admin, json!({"quizId": quiz["id"]})).await;
    let ws = |token: String| {
        let url = format!(
            "{}/api/quiz-sessions/{}/ws",
            base.replace("http", "ws"),
            session["id"].as_str().unwrap()
        );
        let mut request = url.into_client_request().unwrap();
        let offered = format!("ewpm.room.v1, ewpm.bearer.{token}");
        request.headers_mut().insert("sec-websocket-protocol", offered.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    let token = admin.trim_start_matches("Bearer ").to_string();
    let (mut socket, response) = ws(token.clone()).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "ewpm.room.v1");
    let first = tokio::time::timeout(WAIT, socket.next()).await.unwrap().unwrap().unwrap();
    let first: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(first["type"], "session", "{first}");
    let forged = format!("{}x", &token[..token.len() - 1]);
    match ws(forged).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("a forged token was not refused: {:?}", other.map(|(_, r)| r.status())),
    }
}

#[tokio::test]
async fn people_use_every_page_in_chromium_and_see_it_live() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, base, _) = start_dev(
        dir.path(),
        &[("EWPM_AUTH__SECRET", TEST_SECRET), ("EWPM_PROGRESS__FLUSH_INTERVAL_MS", "200")],
    )
    .await;
    let rest = Rest { base: base.clone(), http: ewpm_testkit::http_client() };
    let admin = bearer("admin-1", Role::Admin, None);
    let hr = bearer("hr-acme", Role::EmployerAdmin, Some("acme"));
    let feed = bearer("feed-1", Role::Ingest, None);
    let me = bearer("dev-employee", Role::Employee, Some("acme"));

    // What there is to see: a challenge with three colleagues on its board, a match with
    // events, an incentive that a reported birth earns.
    let challenge = rest
        .post_ok(
            "/api/challenges",
            &admin,
            json!({"name": "Walk to work", "description": "Every kilometre on foot counts",
                   "startTime": "2026-01-01T00:00:00Z", "endTime": "2099-12-31T00:00:00Z",
                   "goal": {"target": 120, "unit": "km"}}),
        )
        .await;
    let challenge = challenge["id"].as_str().unwrap().to_string();
    // A colleague whose user id is markup: the page must show it as text.
    for (user, km) in [("alice", 36), ("bob", 35), ("carol", 31), (HOSTILE, 20)] {
        let token = bearer(user, Role::Employee, Some("acme"));
        rest.post_ok(
            &format!("/api/challenges/{challenge}/progress"),
            &token,
            json!({"value": km}),
        )
        .await;
    }
    rest.post_ok(&format!("/api/challenges/{challenge}/progress"), &me, json!({"value": 17})).await;
    let types = ["goal", "shot", "corner", "yellow_card", "substitution", "chant"];
    let events: Vec<Value> = (0..120)
        .map(|i| {
            json!({"matchId": "match_001", "eventType": types[i % types.len()],
                         "metadata": {"minute": i % 90}})
        })
        .collect();
    rest.post_ok("/api/events/batch", &feed, json!({"events": events})).await;
    rest.post_ok(
        "/api/incentives",
        &admin,
        json!({"slug": "birth-reported", "description": "A reported birth",
               "rule": {"eachOccurrence": {}}, "triggerKinds": ["birth"]}),
    )
    .await;
    rest.post_ok(
        "/api/employers/acme/incentives",
        &hr,
        json!({"programId": "maternity", "incentiveSlug": "birth-reported",
               "reward": "pregnancy pillow", "timeZone": "Europe/Berlin"}),
    )
    .await;
    // The board has all five before the page opens.
    let deadline = Instant::now() + WAIT;
    while rest.get_ok(&format!("/api/challenges/{challenge}/leaderboard"), &me).await["totalMembers"]
        != 5
    {
        assert!(Instant::now() < deadline, "the board never had five members");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let browser = Browser::launch().await.unwrap();

    // A visitor without a token sees the sign-in form.
    let guest = browser.new_context().await.unwrap().new_page().await.unwrap();
    guest.set_viewport(1100, 800, false).await.unwrap();
    guest.goto(&format!("{base}/")).await.unwrap();
    guest.wait_for("document.querySelector('#sign-in textarea')", WAIT).await.unwrap();
    accessible(&guest, "sign-in").await;
    shot(&guest, "sign-in").await;
    no_console_errors(&guest, "sign-in");

    // The employee opens the link `ewpm dev` printed: signed in, and the token is gone from
    // the address bar.
    let employee = browser.new_context().await.unwrap();
    let page = employee.new_page().await.unwrap();
    page.set_viewport(1100, 800, false).await.unwrap();
    page.goto(&printed_link(dir.path(), "employee")).await.unwrap();
    page.wait_for(&format!("document.querySelector('[data-challenge-id=\"{challenge}\"] .rank')?.textContent === 'rank #5'"), WAIT)
        .await
        .unwrap();
    let timing = page
        .eval("(() => { const n = performance.getEntriesByType('navigation')[0]; return [n.domContentLoadedEventEnd, n.loadEventEnd, performance.now()].map(Math.round); })()")
        .await
        .unwrap();
    eprintln!(
        "first visit (ms since navigation): DOMContentLoaded, load, challenges shown ≤ {timing}"
    );
    assert_eq!(page.eval("location.hash").await.unwrap(), "#/challenges");
    assert!(page.text("#signed-in-as").await.unwrap().starts_with("dev-employee"));
    let card = page.text(&format!("[data-challenge-id=\"{challenge}\"]")).await.unwrap();
    assert!(card.contains("17 / 120 km") && card.contains("14.2%"), "{card}");
    accessible(&page, "challenges").await;
    shot(&page, "challenges").await;
    no_console_errors(&page, "challenges");

    // The challenge page: the live board highlights the caller; a submission made through the
    // API reaches the open page.
    page.goto(&format!("{base}/#/challenges/{challenge}")).await.unwrap();
    page.wait_for("document.querySelector('#leaderboard li.me')?.dataset.rank === '5'", WAIT)
        .await
        .unwrap();
    page.wait_for("document.getElementById('stream-state')?.dataset.state === 'live'", WAIT)
        .await
        .unwrap();
    let hostile = page
        .eval(&format!(
            "[[...document.querySelectorAll('#leaderboard li')].some(li => li.dataset.userId === {HOSTILE:?} && li.textContent.includes({HOSTILE:?})), document.querySelectorAll('main img').length]"
        ))
        .await
        .unwrap();
    assert_eq!(hostile, json!([true, 0]), "a user id is text, never markup");
    let sent = Instant::now();
    rest.post_ok(&format!("/api/challenges/{challenge}/progress"), &me, json!({"value": 40})).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let board = rest.get_ok(&format!("/api/challenges/{challenge}/leaderboard"), &me).await;
        if board["entries"][0]["userId"] == "dev-employee" {
            break;
        }
        assert!(Instant::now() < deadline, "the submission never reached the board: {board}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let on_board = Instant::now();
    page.wait_for(
        "(() => { const li = document.querySelector('#leaderboard li.me'); return li && li.dataset.rank === '1' && li.dataset.score === '57' && li.getAttribute('aria-current') === 'true'; })()",
        Duration::from_secs(1),
    )
    .await
    .expect("the open page shows what the board has within 1 s");
    eprintln!(
        "progress: POST → board {} ms, board → page {} ms",
        on_board.duration_since(sent).as_millis(),
        on_board.elapsed().as_millis()
    );
    // The form on the page submits too.
    page.fill("#progress-value", "3").await.unwrap();
    page.click("#progress-form button[type=submit]").await.unwrap();
    page.wait_for("document.querySelector('#leaderboard li.me')?.dataset.score === '60'", WAIT)
        .await
        .unwrap();
    page.wait_for("document.getElementById('my-place').dataset.total === '60'", WAIT)
        .await
        .unwrap();
    accessible(&page, "challenge").await;
    shot(&page, "challenge").await;

    // The same page on a phone.
    page.set_viewport(390, 844, true).await.unwrap();
    page.wait_for("document.querySelector('#leaderboard li.me')", WAIT).await.unwrap();
    accessible(&page, "challenge on a phone").await;
    shot(&page, "challenge-phone").await;
    page.set_viewport(1100, 800, false).await.unwrap();
    no_console_errors(&page, "challenge");

    // Awards: empty, then the reported birth's award arrives without a reload.
    page.goto(&format!("{base}/#/awards")).await.unwrap();
    page.wait_for("document.querySelector('#awards .empty') && document.getElementById('stream-state')?.dataset.state === 'live'", WAIT)
        .await
        .unwrap();
    rest.post_ok("/api/births", &me, json!({})).await;
    page.wait_for(
        "document.querySelector('#awards [data-award-id] h2')?.textContent === 'pregnancy pillow'",
        WAIT,
    )
    .await
    .unwrap();
    accessible(&page, "awards").await;
    shot(&page, "awards").await;
    no_console_errors(&page, "awards");

    // The match dashboard: totals, types and minutes, then a live update.
    page.goto(&format!("{base}/#/matches/match_001")).await.unwrap();
    page.wait_for("document.getElementById('total-events')?.dataset.total === '120'", WAIT)
        .await
        .unwrap();
    assert_eq!(
        page.eval("document.querySelectorAll('#by-type li[data-key]').length").await.unwrap(),
        6
    );
    // The chart's 30 minutes hold every event (all of them arrived in the last minutes).
    let minutes_total = "[...document.querySelectorAll('#per-minute rect')].reduce((n, r) => n + Number(r.dataset.count), 0)";
    page.wait_for(&format!("{minutes_total} === 120"), WAIT).await.unwrap();
    rest.post_ok(
        "/api/events/batch",
        &feed,
        json!({"events": [{"matchId": "match_001", "eventType": "goal"}, {"matchId": "match_001", "eventType": "var_review"}]}),
    )
    .await;
    page.wait_for("document.getElementById('total-events')?.dataset.total === '122'", WAIT)
        .await
        .unwrap();
    page.wait_for(&format!("{minutes_total} === 122"), WAIT).await.unwrap();
    assert_eq!(
        page.eval("document.querySelectorAll('#per-minute rect').length").await.unwrap(),
        30
    );
    page.wait_for(
        "document.querySelector('#by-type li[data-key=\"var_review\"] .num')?.textContent === '1'",
        WAIT,
    )
    .await
    .unwrap();
    accessible(&page, "match").await;
    shot(&page, "match").await;
    no_console_errors(&page, "match");

    // A quiz, host and participant in two browser contexts. The quiz comes through the API
    // with long time limits (a slow machine must not close a question under the test); the
    // app's sample quiz is created too, from the page.
    let quiz = rest
        .post_ok(
            "/api/quizzes",
            &admin,
            json!({"title": "Browser quiz", "questions": [
                {"text": "Steps a day for good health?", "kind": "single_choice",
                 "choices": ["1,000", "10,000", "100,000"], "correctChoices": [1], "timeLimitSecs": 300},
                {"text": "Fruit and vegetable portions a day?", "kind": "single_choice",
                 "choices": ["2", "5", "9"], "correctChoices": [1], "timeLimitSecs": 300},
                {"text": "Which helps sleep most?", "kind": "poll",
                 "choices": ["No screens", "Reading", "A walk"], "timeLimitSecs": 300}]}),
        )
        .await;
    let quiz = quiz["id"].as_str().unwrap().to_string();
    let host_context = browser.new_context().await.unwrap();
    let host = host_context.new_page().await.unwrap();
    host.set_viewport(1100, 900, false).await.unwrap();
    host.goto(&format!("{}&to=/quiz", printed_link(dir.path(), "admin"))).await.unwrap();
    host.wait_for("document.getElementById('sample-quiz')", WAIT).await.unwrap();
    host.wait_for("document.querySelectorAll('[data-quiz-id]').length === 1", WAIT).await.unwrap();
    host.click("#sample-quiz").await.unwrap();
    host.wait_for("document.querySelectorAll('[data-quiz-id]').length === 2", WAIT).await.unwrap();
    host.click(&format!("[data-quiz-id=\"{quiz}\"] button")).await.unwrap();
    let session = host
        .wait_for("(location.hash.match(/^#\\/quiz\\/([^/]+)\\/host$/) || [])[1]", WAIT)
        .await
        .unwrap();
    let session = session.as_str().unwrap().to_string();
    host.wait_for("document.getElementById('open')?.disabled === false", WAIT).await.unwrap();

    // The participant plays on a phone. They arrive before the host opens the session: Join
    // waits, then wakes up.
    page.set_viewport(390, 844, true).await.unwrap();
    page.goto(&format!("{base}/#/quiz")).await.unwrap();
    page.wait_for("document.getElementById('session-id')", WAIT).await.unwrap();
    accessible(&page, "quiz home").await;
    page.fill("#session-id", &session).await.unwrap();
    page.click("#join-form button").await.unwrap();
    page.wait_for("document.getElementById('join')?.disabled === true && document.getElementById('join-state').textContent.includes('not opened')", WAIT)
        .await
        .unwrap();
    host.click("#open").await.unwrap();
    host.wait_for("document.getElementById('quiz-state')?.dataset.state === 'open'", WAIT)
        .await
        .unwrap();
    page.wait_for("document.getElementById('join')?.disabled === false", WAIT).await.unwrap();
    page.click("#join").await.unwrap();
    page.wait_for("document.getElementById('waiting') && document.getElementById('stream-state')?.dataset.state === 'live'", WAIT)
        .await
        .unwrap();
    host.wait_for(
        "/ 1 participants$/.test(document.getElementById('quiz-state').textContent)",
        WAIT,
    )
    .await
    .unwrap();
    host.click("#start").await.unwrap();
    host.wait_for("document.getElementById('reveal')?.disabled === false", WAIT).await.unwrap();

    // Question 1: the participant sees it with a countdown and no answer, answers right; the
    // only connected participant answered, so it closes and both see the distribution.
    host.click("#reveal").await.unwrap();
    page.wait_for("document.querySelectorAll('#stage [data-choice]').length === 3", WAIT)
        .await
        .unwrap();
    page.wait_for("/^\\d+s$/.test(document.getElementById('countdown').textContent)", WAIT)
        .await
        .unwrap();
    // A reload mid-question picks the open question up again, with the time it has left
    // (not its whole limit again).
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let left =
        page.eval("Number(document.getElementById('countdown').dataset.left)").await.unwrap();
    page.eval("window.beforeReload = true; setTimeout(() => location.reload(), 0)").await.unwrap();
    page.wait_for("window.beforeReload === undefined && document.querySelectorAll('#stage [data-choice]').length === 3 && document.getElementById('stream-state')?.dataset.state === 'live'", WAIT)
        .await
        .unwrap();
    let after = page
        .wait_for("Number(document.getElementById('countdown').dataset.left)", WAIT)
        .await
        .unwrap();
    assert!(
        after.as_i64() <= left.as_i64() && after.as_i64() > Some(250),
        "left {left}, then {after}"
    );
    host.wait_for(
        "document.querySelector('#host-question')?.textContent.includes('(correct)')",
        WAIT,
    )
    .await
    .unwrap();
    accessible(&page, "quiz question").await;
    shot(&page, "quiz-question").await;
    page.click("#stage [data-choice=\"1\"]").await.unwrap();
    page.wait_for("document.getElementById('answer-result')?.dataset.correct === 'true'", WAIT)
        .await
        .unwrap();
    page.wait_for(
        "document.querySelector('#stage [data-choice=\"1\"]').classList.contains('correct')",
        WAIT,
    )
    .await
    .unwrap();
    host.wait_for(
        "document.querySelector('#distribution li[data-key=\"1\"] .num')?.textContent === '1'",
        WAIT,
    )
    .await
    .unwrap();
    page.wait_for("document.querySelector('#quiz-board li.me')?.dataset.rank === '1'", WAIT)
        .await
        .unwrap();
    assert!(page.text("#my-score").await.unwrap().starts_with("Your score:"));
    shot(&page, "quiz-answered").await;
    accessible(&host, "quiz host").await;
    shot(&host, "quiz-host").await;

    // Question 2 answered wrong; question 3 is a poll.
    host.click("#reveal").await.unwrap();
    page.wait_for("document.querySelector('#question')?.textContent.startsWith('Fruit')", WAIT)
        .await
        .unwrap();
    page.click("#stage [data-choice=\"0\"]").await.unwrap();
    page.wait_for("document.getElementById('answer-result')?.dataset.correct === 'false'", WAIT)
        .await
        .unwrap();
    host.wait_for(
        "document.querySelector('#distribution li[data-key=\"0\"] .num')?.textContent === '1'",
        WAIT,
    )
    .await
    .unwrap();
    host.click("#reveal").await.unwrap();
    page.wait_for("document.querySelector('#question')?.textContent.startsWith('Which')", WAIT)
        .await
        .unwrap();
    page.click("#stage [data-choice=\"2\"]").await.unwrap();
    page.wait_for("document.getElementById('answer-result')?.dataset.correct === 'poll'", WAIT)
        .await
        .unwrap();
    host.wait_for("document.getElementById('reveal').disabled", WAIT).await.unwrap();
    host.click("#finish").await.unwrap();
    page.wait_for("document.getElementById('finished')", WAIT).await.unwrap();
    host.wait_for("document.getElementById('quiz-state')?.dataset.state === 'finished'", WAIT)
        .await
        .unwrap();
    page.wait_for("document.querySelector('#quiz-board li.me')?.dataset.rank === '1'", WAIT)
        .await
        .unwrap();
    shot(&page, "quiz-finished").await;
    no_console_errors(&page, "quiz (participant)");
    no_console_errors(&host, "quiz (host)");
}

#[tokio::test]
async fn an_open_board_page_reconnects_when_ewpm_dev_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let env = [("EWPM_AUTH__SECRET", TEST_SECRET), ("EWPM_PROGRESS__FLUSH_INTERVAL_MS", "200")];
    let (dev, base, _) = start_dev_on(dir.path(), ports, &env).await;
    let rest = Rest { base: base.clone(), http: ewpm_testkit::http_client() };
    let admin = bearer("admin-1", Role::Admin, None);
    let me = bearer("dev-employee", Role::Employee, Some("acme"));
    let challenge = rest
        .post_ok(
            "/api/challenges",
            &admin,
            json!({"name": "Stairs", "startTime": "2026-01-01T00:00:00Z",
                   "endTime": "2099-12-31T00:00:00Z", "goal": {"target": 500, "unit": "floors"}}),
        )
        .await;
    let challenge = challenge["id"].as_str().unwrap().to_string();
    rest.post_ok(&format!("/api/challenges/{challenge}/progress"), &me, json!({"value": 5})).await;

    let browser = Browser::launch().await.unwrap();
    let page = browser.new_context().await.unwrap().new_page().await.unwrap();
    page.goto(&format!("{}&to=/challenges/{challenge}", printed_link(dir.path(), "employee")))
        .await
        .unwrap();
    page.wait_for("document.querySelector('#leaderboard li.me')?.dataset.score === '5'", WAIT)
        .await
        .unwrap();

    // Killed: the page says it is reconnecting (and keeps what it showed).
    drop(dev);
    page.wait_for("document.getElementById('stream-state').dataset.state === 'reconnecting'", WAIT)
        .await
        .unwrap();
    assert_eq!(
        page.eval("document.querySelector('#leaderboard li.me').dataset.score").await.unwrap(),
        "5"
    );

    // Back on the same ports and files: the page is live again by itself, and new progress
    // reaches it without a reload.
    let (_dev, _, _) = start_dev_on(dir.path(), ports, &env).await;
    page.wait_for(
        "document.getElementById('stream-state').dataset.state === 'live'",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    rest.post_ok(&format!("/api/challenges/{challenge}/progress"), &me, json!({"value": 7})).await;
    page.wait_for("document.querySelector('#leaderboard li.me')?.dataset.score === '12'", WAIT)
        .await
        .unwrap();
    // Only the outage's failed connections (`net::ERR_…`) reached the console.
    let errors: Vec<String> =
        page.console_errors().into_iter().filter(|e| !e.contains("net::ERR_")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Serves `html` to every request on a port of its own: a page of another origin.
async fn serve_page(html: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    html.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(html.as_bytes()).await;
            });
        }
    });
    port
}

/// A page on another origin calls the API from a real browser: allowed when its origin is in
/// `EWPM_HTTP__CORS_ORIGINS` (the preflight for the Authorization header passes, the answer is
/// readable), blocked by the browser when it is not.
#[tokio::test]
async fn a_page_of_an_allowed_origin_calls_the_api_and_another_is_blocked() {
    const PAGE: &str =
        "<!doctype html><html lang=en><title>elsewhere</title><p>another origin</p></html>";
    let allowed = serve_page(PAGE).await;
    let other = serve_page(PAGE).await;
    let dir = tempfile::tempdir().unwrap();
    let origin = format!("http://127.0.0.1:{allowed}");
    let (_dev, base, _) = start_dev(
        dir.path(),
        &[("EWPM_AUTH__SECRET", TEST_SECRET), ("EWPM_HTTP__CORS_ORIGINS", origin.as_str())],
    )
    .await;
    let token = bearer("dev-employee", Role::Employee, Some("acme"));
    let call = format!(
        "fetch({:?}, {{ headers: {{ authorization: {:?} }} }}).then(async (r) => [r.status, Array.isArray((await r.json()).challenges)], (e) => ['blocked', e.name])",
        format!("{base}/api/challenges"),
        token
    );
    let browser = Browser::launch().await.unwrap();
    let page = browser.new_context().await.unwrap().new_page().await.unwrap();
    page.goto(&format!("{origin}/")).await.unwrap();
    assert_eq!(page.eval(&call).await.unwrap(), json!([200, true]));
    no_console_errors(&page, "allowed origin");

    page.goto(&format!("http://127.0.0.1:{other}/")).await.unwrap();
    assert_eq!(page.eval(&call).await.unwrap(), json!(["blocked", "TypeError"]));
    let errors = page.console_errors();
    assert!(
        errors.iter().any(|e| e.contains("CORS") || e.contains("Access-Control-Allow-Origin")),
        "the browser says why: {errors:#?}"
    );
}
