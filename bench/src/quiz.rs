//! `ewpm bench quiz`: SubmitAnswer throughput against the bare echo in the same run, and the
//! fan-out lag of a session's room (WatchSession streams) from the host's reveal to each
//! participant's `question_revealed`, for rooms of each size asked for.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use ewpm_kit::{auth::Role, module::Module};
use ewpm_proto::quiz::v1::{
    self as pb, quiz_service_client::QuizServiceClient, watch_session_response::Event,
};
use futures::StreamExt;
use serde_json::json;
use tonic::{Request, transport::Channel};

use crate::{
    percentile,
    pipeline::{Phase, PipelineArgs, Target, channels, echo},
};

/// `ewpm bench quiz` options.
#[derive(Debug, Args)]
pub struct QuizArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Participants of the answer phase; each answers every question once.
    #[arg(long, default_value_t = 2_000)]
    participants: usize,
    /// Questions of the answer phase.
    #[arg(long, default_value_t = 10)]
    questions: usize,
    /// Room sizes (participants watching one session) of the fan-out phase.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    rooms: Vec<usize>,
    /// Reveals timed per room.
    #[arg(long, default_value_t = 5)]
    reveals: usize,
}

struct Quiz {
    clients: Vec<QuizServiceClient<Channel>>,
    admin: String,
    target: Target,
}

fn req<T>(message: T, token: &str) -> anyhow::Result<Request<T>> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", token.parse()?);
    Ok(r)
}

impl Quiz {
    fn player(&self, n: usize) -> String {
        self.target
            .bearer(&format!("bench-player-{n}"), Role::Employee)
            .to_str()
            .unwrap_or_default()
            .to_string()
    }

    fn client(&self, n: usize) -> QuizServiceClient<Channel> {
        self.clients[n % self.clients.len()].clone()
    }

    /// A running session of a quiz of `questions` single-choice questions (10 minutes each),
    /// joined by players `0..players`.
    async fn session(
        &self,
        questions: usize,
        players: usize,
        concurrency: usize,
    ) -> anyhow::Result<(String, Vec<String>)> {
        let qs = (0..questions)
            .map(|i| pb::Question {
                text: format!("Bench question {i}?"),
                kind: pb::QuestionKind::SingleChoice.into(),
                choices: vec!["a".into(), "b".into(), "c".into(), "d".into()],
                correct_choices: vec![i32::try_from(i % 4).unwrap_or(0)],
                time_limit_secs: 600,
                ..Default::default()
            })
            .collect();
        let mut c = self.client(0);
        let quiz = c
            .create_quiz(req(
                pb::CreateQuizRequest {
                    title: "bench".into(),
                    employer_id: String::new(),
                    questions: qs,
                    idempotency_key: String::new(),
                },
                &self.admin,
            )?)
            .await
            .context("CreateQuiz")?
            .into_inner()
            .quiz
            .context("quiz")?;
        let session = c
            .create_session(req(
                pb::CreateSessionRequest { quiz_id: quiz.id.clone(), ..Default::default() },
                &self.admin,
            )?)
            .await
            .context("CreateSession")?
            .into_inner()
            .session
            .context("session")?
            .id;
        c.open_session(req(pb::OpenSessionRequest { session_id: session.clone() }, &self.admin)?)
            .await?;
        let joined = futures::stream::iter(0..players)
            .map(|n| {
                let mut c = self.client(n);
                let token = self.player(n);
                let s = session.clone();
                async move {
                    c.join_session(req(
                        pb::JoinSessionRequest { session_id: s, team: String::new() },
                        &token,
                    )?)
                    .await
                    .map_err(anyhow::Error::from)
                }
            })
            .buffer_unordered(concurrency)
            .filter(|r| std::future::ready(r.is_ok()))
            .count()
            .await;
        anyhow::ensure!(joined == players, "only {joined} of {players} players joined");
        c.start_session(req(pb::StartSessionRequest { session_id: session.clone() }, &self.admin)?)
            .await?;
        Ok((session, quiz.questions.into_iter().map(|q| q.id).collect()))
    }

    async fn reveal(&self, session: &str) -> anyhow::Result<()> {
        self.client(0)
            .reveal_next_question(req(
                pb::RevealNextQuestionRequest { session_id: session.to_string() },
                &self.admin,
            )?)
            .await
            .context("RevealNextQuestion")?;
        Ok(())
    }
}

/// `ewpm bench quiz`.
pub async fn quiz(args: QuizArgs, modules: &'static [&'static dyn Module]) -> anyhow::Result<()> {
    let target = Target::open(&args.pipeline, modules).await?;
    let uri = target.quiz_uri.clone();
    let clients = channels(&uri, 4).await?.into_iter().map(QuizServiceClient::new).collect();
    let admin = target.bearer("bench-admin", Role::Admin).to_str().unwrap_or_default().to_string();
    let q = Quiz { clients, admin, target };
    let result = run(&q, &args, &uri).await;
    q.target.close().await;
    result
}

async fn run(q: &Quiz, args: &QuizArgs, uri: &str) -> anyhow::Result<()> {
    let p = &args.pipeline;
    let concurrency = p.concurrency.max(1);
    let echo = echo(&q.target.progress, concurrency, Duration::from_secs(p.duration)).await;
    let echo_rate = echo.rate();

    // Answers: every player answers each question, `concurrency` at a time; the host reveals
    // the next question when all have answered.
    let players = args.participants.max(1);
    let (session, questions) = q.session(args.questions.max(1), players, concurrency).await?;
    let mut latencies = Vec::with_capacity(players * questions.len());
    let mut errors = 0u64;
    let mut secs = 0.0;
    for (i, question) in questions.iter().enumerate() {
        q.reveal(&session).await?;
        let started = Instant::now();
        let results: Vec<Option<Duration>> = futures::stream::iter(0..players)
            .map(|n| {
                let mut c = q.client(n);
                let token = q.player(n);
                let (s, qid) = (session.clone(), question.clone());
                let pick = i32::try_from((n + i) % 4).unwrap_or(0);
                async move {
                    let t = Instant::now();
                    let r = req(
                        pb::SubmitAnswerRequest {
                            session_id: s,
                            question_id: qid,
                            answer: Some(pb::Answer { choices: vec![pick], text: String::new() }),
                        },
                        &token,
                    )
                    .ok()?;
                    c.submit_answer(r).await.ok().map(|_| t.elapsed())
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        secs += started.elapsed().as_secs_f64();
        for r in results {
            match r {
                Some(l) => latencies.push(l),
                None => errors += 1,
            }
        }
    }
    latencies.sort();
    let answers = Phase { ops: latencies.len() as u64, errors, secs, latencies };

    // Rooms: N players watch one session; the host reveals; lag to each stream's event.
    let mut rooms = Vec::new();
    for &n in &args.rooms {
        rooms.push((n, room(q, uri, n, args.reveals.max(1), concurrency).await?));
    }

    if p.json {
        let rooms: Vec<_> = rooms
            .iter()
            .map(|(n, (connected, lags))| json!({"participants": n, "connected": connected, "samples": lags.len(), "reveal_to_stream_ms": {"p50": percentile(lags, 0.5), "p99": percentile(lags, 0.99), "max": percentile(lags, 1.0)}}))
            .collect();
        println!(
            "{}",
            json!({
                "bench": "quiz",
                "backend": q.target.backend,
                "concurrency": concurrency,
                "participants": players,
                "questions": args.questions,
                "echo": echo.json(echo_rate),
                "answers": answers.json(echo_rate),
                "rooms": rooms,
            })
        );
    } else {
        println!(
            "quiz bench on {} — {} clients, {} players x {} questions",
            q.target.backend, concurrency, players, args.questions
        );
        println!("{}", echo.line("bare echo (health)", echo_rate));
        println!("{}", answers.line("SubmitAnswer", echo_rate));
        for (n, (connected, lags)) in &rooms {
            println!(
                "  room of {n:>6}: reveal → question_revealed p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({connected} streams, {} samples)",
                percentile(lags, 0.5),
                percentile(lags, 0.99),
                percentile(lags, 1.0),
                lags.len()
            );
        }
    }
    Ok(())
}

/// Opens `n` WatchSession streams of a fresh session, reveals `reveals` questions, and
/// returns the streams connected and the lags from each reveal to each stream's event.
async fn room(
    q: &Quiz,
    uri: &str,
    n: usize,
    reveals: usize,
    concurrency: usize,
) -> anyhow::Result<(usize, Vec<Duration>)> {
    let (session, _) = q.session(reveals, n, concurrency).await?;
    let connections = n.div_ceil(100).max(1);
    let channels = channels(uri, connections).await?;
    let lags: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let sent: Arc<Mutex<Option<Instant>>> = Arc::default();
    let ready = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let stop = ewpm_kit::CancellationToken::new();
    let refused: Arc<Mutex<Option<tonic::Status>>> = Arc::default();
    let retries = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(n);
    for w in 0..n {
        let mut client = QuizServiceClient::new(channels[w % connections].clone());
        let request =
            req(pb::WatchSessionRequest { session_id: session.clone(), top: 1 }, &q.player(w))?;
        let metadata = request.metadata().clone();
        let (retries, failed) = (retries.clone(), failed.clone());
        let (lags, sent, ready, seen, stop, refused) = (
            lags.clone(),
            sent.clone(),
            ready.clone(),
            seen.clone(),
            stop.clone(),
            refused.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // Everyone opens the room at once, as when a host shares the link; a call over
            // the server's in-flight cap is refused with RetryInfo, and retried after it, as
            // clients should.
            let mut attempt = 0;
            let response = loop {
                let mut request = Request::new(request.get_ref().clone());
                request.metadata_mut().clone_from(&metadata);
                match client.watch_session(request).await {
                    Ok(r) => break r,
                    Err(status)
                        if status.code() == tonic::Code::ResourceExhausted && attempt < 100 =>
                    {
                        attempt += 1;
                        retries.fetch_add(1, Ordering::Relaxed);
                        let wait = ewpm_kit::error::retry_delay(&status)
                            .unwrap_or(Duration::from_millis(100));
                        tokio::time::sleep(wait).await;
                    }
                    Err(status) => {
                        refused.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(status);
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            };
            let mut stream = response.into_inner();
            ready.fetch_add(1, Ordering::Relaxed);
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => return,
                    next = stream.next() => next,
                };
                let Some(Ok(m)) = next else { return };
                if let Some(Event::QuestionRevealed(_)) = m.event {
                    let at = *sent.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(at) = at {
                        lags.lock().unwrap_or_else(|p| p.into_inner()).push(at.elapsed());
                    }
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected = ready.load(Ordering::Relaxed);
    if let Some(status) = refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
        eprintln!(
            "  {} of {n} streams refused, e.g. {:?}: {}",
            n - connected,
            status.code(),
            status.message()
        );
    }
    for r in 0..reveals {
        *sent.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        q.reveal(&session).await?;
        let want = connected * (r + 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stop.cancel();
    for t in tasks {
        t.await.ok();
    }
    let mut lags = std::mem::take(&mut *lags.lock().unwrap_or_else(|p| p.into_inner()));
    lags.sort();
    let retried = retries.load(Ordering::Relaxed);
    if retried > 0 {
        eprintln!(
            "  room of {n}: {retried} stream opens were refused as over the in-flight cap and retried after RetryInfo"
        );
    }
    Ok((connected, lags))
}
