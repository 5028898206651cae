//! The module contract as a host runs it: settings sections, migrations, durable topics,
//! parts, background tasks and the drain, with a module defined here.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use ewpm_kit::{
    CancellationToken,
    auth::TokenKeys,
    host::Host,
    module::{Context, Mode, Module, Part, async_trait},
    settings::{Section, Settings},
};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoSettings {
    greeting: String,
}

impl Default for EchoSettings {
    fn default() -> Self {
        Self { greeting: "hello".into() }
    }
}

/// What the module saw and did, for the test to read.
#[derive(Debug, Default)]
struct Seen {
    started: Vec<(Option<&'static str>, String, Mode, String)>,
    task_ended: bool,
}

struct Echo {
    seen: Arc<Mutex<Seen>>,
}

#[async_trait]
impl Module for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn about(&self) -> &'static str {
        "a module of the test"
    }

    fn section(&self) -> Section {
        Section::of::<EchoSettings>("echo")
    }

    fn parts(&self) -> &'static [Part] {
        &[Part { name: "worker", about: "the worker alone" }]
    }

    fn durable_topics(&self) -> &'static [&'static str] {
        &["echo-topic"]
    }

    async fn migrate(&self, db: &DatabaseConnection) -> anyhow::Result<()> {
        db.execute_unprepared("CREATE TABLE IF NOT EXISTS echoes (said TEXT NOT NULL)").await?;
        Ok(())
    }

    async fn start(&self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let settings: EchoSettings = ctx.section()?;
        let db = ctx.db()?;
        db.execute_unprepared(&format!("INSERT INTO echoes VALUES ('{}')", settings.greeting))
            .await?;
        let bus = ctx.bus().await?;
        bus.publish("echo-topic", &[settings.greeting.clone().into_bytes()]).await?;
        let peer = ctx.service_uri("echo")?;
        self.seen.lock().unwrap().started.push((ctx.part(), settings.greeting, ctx.mode(), peer));
        let tasks = ctx.tasks();
        let seen = self.seen.clone();
        ctx.spawn(async move {
            tasks.cancelled().await;
            seen.lock().unwrap().task_ended = true;
        });
        Ok(())
    }
}

fn leak(echo: Echo) -> &'static dyn Module {
    Box::leak(Box::new(echo))
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn an_embedded_host_migrates_starts_and_drains_its_modules() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let module = leak(Echo { seen: seen.clone() });
    let modules: &'static [&'static dyn Module] = Box::leak(Box::new([module]));
    let data_dir = dir.path().display().to_string();
    let settings = Settings::load_from(
        &vars(&[
            ("EWPM_DATA_DIR", &data_dir),
            ("EWPM_ECHO__GREETING", "hi"),
            ("EWPM_SERVICES__ECHO", "http://127.0.0.1:1"),
            ("EWPM_GRPC__SHUTDOWN_GRACE_SECS", "2"),
        ]),
        &[module.section()],
    )
    .unwrap();
    let keys = TokenKeys::new("secret", &settings.auth);
    let shutdown = CancellationToken::new();
    let mut host = Host::embedded(settings, keys, modules, shutdown.clone()).await.unwrap();
    host.start(module, None).await.unwrap();

    // Its section, its migration, its durable topic in a file of its own.
    assert_eq!(
        seen.lock().unwrap().started,
        vec![(None, "hi".to_string(), Mode::Embedded, "http://127.0.0.1:1".to_string())]
    );
    let db = host.database().unwrap().clone();
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT said FROM echoes",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<String>("", "said").unwrap(), "hi");
    assert!(dir.path().join("echo-topic-bus.db").is_file());
    let bus = host.bus().await.unwrap();
    assert!(bus.durable("echo-topic"), "a declared topic is kept on disk");
    assert!(!bus.durable("other"), "an undeclared topic stays in memory");

    // Serving until shutdown, then the background task is stopped and awaited.
    let listener = ewpm_kit::server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let served = tokio::spawn(host.serve(listener, async { Ok(()) }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!seen.lock().unwrap().task_ended);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), served).await.unwrap().unwrap().unwrap();
    assert!(seen.lock().unwrap().task_ended, "the drain waited for the background task");
}

#[tokio::test]
async fn a_mesh_host_names_what_a_module_lacks() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let module = leak(Echo { seen: seen.clone() });
    let settings = Settings::load_from(&[], &[module.section()]).unwrap();
    let keys = TokenKeys::new("secret", &settings.auth);
    let mut host = Host::mesh(settings, keys, CancellationToken::new()).await.unwrap();
    let err = host.start(module, Some("worker")).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("start echo-worker"), "{message}");
    assert!(message.contains("DATABASE_URL"), "{message}");
    assert!(seen.lock().unwrap().started.is_empty());
}
