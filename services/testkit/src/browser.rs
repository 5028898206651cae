//! A small headless-Chromium driver over the Chrome DevTools Protocol (CDP), for browser tests.
//!
//! [`Browser::launch`] starts the machine's Chromium (`EWPM_CHROMIUM`, else `chromium`,
//! `chromium-browser` or `google-chrome` on `PATH`) with a throwaway profile and talks to it over
//! one websocket. A [`Context`] is an isolated browser context (its own cookies and storage, like
//! an incognito profile); a [`Page`] is a tab in it, driven through a flat CDP session.
//!
//! Every CDP command times out after 30 s and every navigation after 15 s, so a hung browser
//! fails the test instead of hanging it. Dropping the [`Browser`] kills Chromium.

use std::{
    collections::HashMap,
    ffi::{OsStr, OsString},
    io::Read as _,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::{
    process::{Child, Command},
    sync::{broadcast, mpsc, oneshot},
    task::JoinHandle,
    time::{Instant, sleep, timeout, timeout_at},
};
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};

/// How long any single CDP command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Page::goto`] waits for the page to load.
const NAVIGATION_TIMEOUT: Duration = Duration::from_secs(15);
/// How long Chromium may take to write `DevToolsActivePort`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How much of Chromium's stderr is kept for error messages.
const STDERR_TAIL: usize = 8 * 1024;
/// Flags needed to run headless as root on a closed network without background chatter.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
    // Pages format numbers and dates the same on every machine.
    "--lang=en-US",
];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The CDP connection shared by a browser and everything opened in it.
struct Cdp {
    outgoing: mpsc::UnboundedSender<String>,
    next_id: AtomicU64,
    shared: Mutex<Shared>,
}

#[derive(Default)]
struct Shared {
    pending: HashMap<u64, oneshot::Sender<Result<Value, String>>>,
    sessions: HashMap<String, Arc<PageState>>,
    closed: Option<String>,
}

impl Cdp {
    /// Sends `method` (on `session`, or to the browser) and waits for its result.
    async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut shared = lock(&self.shared);
            if let Some(reason) = &shared.closed {
                bail!("CDP {method}: the connection to Chromium is closed ({reason})");
            }
            shared.pending.insert(id, tx);
        }
        self.send(id, session, method, params);
        match timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(error))) => bail!("CDP {method} failed: {error}"),
            Ok(Err(_)) => {
                bail!("CDP {method}: the connection to Chromium closed ({})", self.closed())
            }
            Err(_) => {
                lock(&self.shared).pending.remove(&id);
                bail!("CDP {method} got no reply within {COMMAND_TIMEOUT:?}: is Chromium hung?")
            }
        }
    }

    /// Sends `method` without waiting for (or keeping) its result; for cleanup in `Drop`.
    fn send(&self, id: u64, session: Option<&str>, method: &str, params: Value) {
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = session.into();
        }
        // A send error means the connection task ended; `call` reports that via the dropped reply.
        let _ = self.outgoing.send(message.to_string());
    }

    fn notify(&self, method: &str, params: Value) {
        self.send(self.next_id.fetch_add(1, Ordering::Relaxed), None, method, params);
    }

    fn closed(&self) -> String {
        lock(&self.shared).closed.clone().unwrap_or_else(|| "no reason known".into())
    }

    /// Routes one message from Chromium: replies by `id`, session events to their page.
    fn dispatch(&self, text: &str) {
        let Ok(mut message) = serde_json::from_str::<Value>(text) else { return };
        if let Some(id) = message.get("id").and_then(Value::as_u64) {
            let reply = match message.get("error") {
                Some(e) => {
                    Err(format!("{} (code {})", e["message"].as_str().unwrap_or("?"), e["code"]))
                }
                None => Ok(message["result"].take()),
            };
            if let Some(tx) = lock(&self.shared).pending.remove(&id) {
                let _ = tx.send(reply);
            }
        } else if let Some(session) = message.get("sessionId").and_then(Value::as_str) {
            let page = lock(&self.shared).sessions.get(session).cloned();
            if let Some(page) = page {
                page.on_event(message);
            }
        }
    }
}

/// The one task that owns the websocket: writes queued commands, reads and dispatches messages.
async fn pump<S>(mut ws: S, mut outgoing: mpsc::UnboundedReceiver<String>, cdp: Arc<Cdp>)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + Unpin,
{
    let reason = loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => cdp.dispatch(text.as_str()),
                Some(Ok(Message::Close(_))) | None => break "websocket closed".to_string(),
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("websocket error: {e}"),
            },
            command = outgoing.recv() => match command {
                Some(text) => {
                    if let Err(e) = ws.send(Message::text(text)).await {
                        break format!("websocket send failed: {e}");
                    }
                }
                None => break "browser dropped".to_string(),
            },
        }
    };
    let mut shared = lock(&cdp.shared);
    shared.closed = Some(reason);
    shared.pending.clear(); // drops the reply senders: every waiting `call` fails now
}

/// What one page's session collected: console output, and a feed of its events.
struct PageState {
    events: broadcast::Sender<Arc<Value>>,
    /// Every console message, exception and log entry, each with "is it an error".
    log: Mutex<Vec<(bool, String)>>,
}

impl PageState {
    fn on_event(&self, message: Value) {
        let p = &message["params"];
        let entry = match message["method"].as_str().unwrap_or_default() {
            "Runtime.consoleAPICalled" => {
                let kind = p["type"].as_str().unwrap_or("log");
                let args = p["args"].as_array().map(Vec::as_slice).unwrap_or_default();
                let text: Vec<String> = args.iter().map(remote_to_string).collect();
                let at = &p["stackTrace"]["callFrames"][0];
                let at = match at["url"].as_str() {
                    Some(url) if !url.is_empty() => format!(" ({url}:{})", at["lineNumber"]),
                    _ => String::new(),
                };
                Some((
                    kind == "error" || kind == "assert",
                    format!("console.{kind}: {}{at}", text.join(" ")),
                ))
            }
            "Runtime.exceptionThrown" => Some((
                true,
                format!("uncaught exception: {}", exception_text(&p["exceptionDetails"])),
            )),
            "Log.entryAdded" => {
                let e = &p["entry"];
                let level = e["level"].as_str().unwrap_or("?");
                let (source, text) =
                    (e["source"].as_str().unwrap_or("?"), e["text"].as_str().unwrap_or(""));
                let url = e["url"].as_str().map(|u| format!(" ({u})")).unwrap_or_default();
                Some((level == "error", format!("{source} {level}: {text}{url}")))
            }
            _ => None,
        };
        if let Some(entry) = entry {
            lock(&self.log).push(entry);
        }
        let _ = self.events.send(Arc::new(message)); // no receiver: nobody is waiting
    }
}

/// A CDP `RemoteObject` as console text: strings bare, other values as JSON or description.
fn remote_to_string(o: &Value) -> String {
    match (&o["value"], o["unserializableValue"].as_str(), o["description"].as_str()) {
        (Value::String(s), _, _) => s.clone(),
        (_, Some(u), _) => u.to_string(),
        (_, _, Some(d)) => d.to_string(),
        (Value::Null, _, _) if o["type"] == "undefined" => "undefined".into(),
        (v, _, _) => v.to_string(),
    }
}

/// Readable text of CDP `ExceptionDetails`: the exception's description (with stack) or text.
fn exception_text(details: &Value) -> String {
    let text = details["text"].as_str().unwrap_or("exception");
    match details["exception"]["description"].as_str() {
        Some(description) => format!("{text} {description}"),
        None => text.to_string(),
    }
}

/// JavaScript truthiness of a value [`Page::eval`] returned.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Finds the Chromium executable: `EWPM_CHROMIUM`, else the first known name on `PATH`.
fn find_chromium() -> anyhow::Result<PathBuf> {
    if let Some(exe) = std::env::var_os("EWPM_CHROMIUM").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(exe));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            let executable = candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if executable {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "no Chromium found: set EWPM_CHROMIUM, or put chromium, chromium-browser or google-chrome on PATH \
         (on Debian: `apt-get install chromium`; scripts/test installs it)"
    )
}

/// A headless Chromium with its own throwaway profile; dropping it kills Chromium.
pub struct Browser {
    cdp: Arc<Cdp>,
    io: JoinHandle<()>,
    child: Child,
    /// Disconnects once no Chromium process holds the stderr pipe any more.
    stderr_closed: Mutex<std::sync::mpsc::Receiver<()>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium and connects to it over CDP.
    pub async fn launch() -> anyhow::Result<Browser> {
        let exe = find_chromium()?;
        let profile = tempfile::Builder::new()
            .prefix("ewpm-chromium-")
            .tempdir()
            .context("creating Chromium's user data dir")?;
        let mut user_data_dir = OsString::from("--user-data-dir=");
        user_data_dir.push(profile.path());
        // Stderr goes to a plain pipe drained by a thread, which also tells `Drop` when every
        // Chromium process (they all inherit it) is gone.
        let (mut stderr, stderr_writer) = std::io::pipe().context("creating a pipe")?;
        let mut command = Command::new(&exe);
        command
            .args(FLAGS.iter().map(OsStr::new))
            .arg(user_data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_writer)
            .env("LANG", "en_US.UTF-8")
            .env("LANGUAGE", "en_US")
            // Its own process group: `Drop` kills every Chromium process at once, helpers
            // included, not only the one it started.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("starting {}", exe.display()))?;
        drop(command); // closes our copy of the pipe's write end
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let (stderr_open, stderr_closed) = std::sync::mpsc::channel::<()>();
        let tail = stderr_tail.clone();
        std::thread::spawn(move || {
            let _stderr_open = stderr_open; // dropped at EOF
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                let mut tail = lock(&tail);
                tail.extend_from_slice(&buf[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..excess);
            }
        });
        let stderr = || String::from_utf8_lossy(&lock(&stderr_tail)).into_owned();

        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let (port, path) = loop {
            if let Ok(text) = tokio::fs::read_to_string(&port_file).await {
                let mut lines = text.lines();
                if let (Some(Ok(port)), Some(path)) =
                    (lines.next().map(str::parse::<u16>), lines.next())
                {
                    break (port, path.to_string());
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let _ = stderr_closed.recv_timeout(Duration::from_secs(1)); // the last words
                bail!(
                    "{} exited ({status}) before opening DevTools; stderr:\n{}",
                    exe.display(),
                    stderr()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} wrote no {} within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                    exe.display(),
                    port_file.display(),
                    stderr()
                );
            }
            sleep(Duration::from_millis(50)).await;
        };

        let url = format!("ws://127.0.0.1:{port}{path}");
        // Full-page screenshots arrive as one big base64 message.
        let config = WebSocketConfig::default()
            .max_message_size(Some(512 << 20))
            .max_frame_size(Some(512 << 20));
        let connect = tokio_tungstenite::connect_async_with_config(&url, Some(config), true);
        let (ws, _) = timeout(COMMAND_TIMEOUT, connect)
            .await
            .map_err(|_| anyhow!("connecting to {url} timed out"))?
            .with_context(|| format!("connecting to Chromium's DevTools at {url}"))?;
        let (outgoing, rx) = mpsc::unbounded_channel();
        let cdp = Arc::new(Cdp { outgoing, next_id: AtomicU64::new(1), shared: Mutex::default() });
        let io = tokio::spawn(pump(ws, rx, cdp.clone()));
        let stderr_closed = Mutex::new(stderr_closed);
        Ok(Browser { cdp, io, child, stderr_closed, _profile: profile })
    }

    /// A new isolated browser context (own cookies and storage, like an incognito profile).
    pub async fn new_context(&self) -> anyhow::Result<Context> {
        let result = self.cdp.call(None, "Target.createBrowserContext", json!({})).await?;
        let id = result["browserContextId"]
            .as_str()
            .context("createBrowserContext: no browserContextId")?;
        Ok(Context { inner: Arc::new(ContextInner { cdp: self.cdp.clone(), id: id.to_string() }) })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        {
            // Pages that outlive the browser fail at once instead of waiting for a reply.
            let mut shared = lock(&self.cdp.shared);
            shared.closed.get_or_insert_with(|| "the browser was dropped".into());
            shared.pending.clear();
        }
        self.io.abort();
        if let Some(pid) = self.child.id() {
            // The whole process group (see `launch`). No `libc` here: `kill` does it.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        // Kill Chromium and wait (a few seconds at most) until all its processes are gone, so
        // that none still writes into the profile directory while it is being removed.
        let _ = self.child.start_kill();
        let _ = lock(&self.stderr_closed).recv_timeout(Duration::from_secs(5));
        let _ = self.child.try_wait();
    }
}

struct ContextInner {
    cdp: Arc<Cdp>,
    id: String,
}

impl Drop for ContextInner {
    fn drop(&mut self) {
        self.cdp.notify("Target.disposeBrowserContext", json!({ "browserContextId": self.id }));
    }
}

/// An isolated browser context; disposed once it and all of its pages are dropped.
pub struct Context {
    inner: Arc<ContextInner>,
}

impl Context {
    /// Opens a new tab (on `about:blank`) in this context.
    pub async fn new_page(&self) -> anyhow::Result<Page> {
        let cdp = &self.inner.cdp;
        let params = json!({ "url": "about:blank", "browserContextId": self.inner.id });
        let target = cdp.call(None, "Target.createTarget", params).await?;
        let target_id =
            target["targetId"].as_str().context("createTarget: no targetId")?.to_string();
        let attach = json!({ "targetId": target_id, "flatten": true });
        let attached = cdp.call(None, "Target.attachToTarget", attach).await;
        let session_id = match attached.and_then(|a| {
            a["sessionId"].as_str().map(str::to_string).context("attachToTarget: no sessionId")
        }) {
            Ok(id) => id,
            Err(e) => {
                cdp.notify("Target.closeTarget", json!({ "targetId": target_id }));
                return Err(e);
            }
        };
        let state =
            Arc::new(PageState { events: broadcast::channel(1024).0, log: Mutex::default() });
        lock(&cdp.shared).sessions.insert(session_id.clone(), state.clone());
        // From here on, dropping `page` on an error closes the tab.
        let page = Page { context: self.inner.clone(), target_id, session_id, state };
        for domain in ["Runtime", "Page", "Log"] {
            page.call(&format!("{domain}.enable"), json!({})).await?;
        }
        Ok(page)
    }
}

/// A tab in a [`Context`]; closed when dropped.
pub struct Page {
    context: Arc<ContextInner>,
    target_id: String,
    session_id: String,
    state: Arc<PageState>,
}

impl Page {
    async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.context.cdp.call(Some(&self.session_id), method, params).await
    }

    /// Emulates a `width`×`height` CSS-pixel viewport (scale factor 1), as a phone if `mobile`.
    pub async fn set_viewport(&self, width: u32, height: u32, mobile: bool) -> anyhow::Result<()> {
        let params =
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile });
        self.call("Emulation.setDeviceMetricsOverride", params).await?;
        Ok(())
    }

    /// Navigates to `url` and waits (up to 15 s) until it has loaded; a navigation that only
    /// changes the fragment is done once Chromium reports it (it fires no load event).
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        // Subscribe first: the events may arrive before the reply to Page.navigate.
        let mut events = self.state.events.subscribe();
        let nav = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(error) = nav["errorText"].as_str().filter(|e| !e.is_empty()) {
            bail!("navigating to {url} failed: {error}");
        }
        let frame = nav["frameId"].as_str().unwrap_or_default();
        // Absent for same-document (fragment) navigations.
        let loader = nav["loaderId"].as_str();
        let wait = async {
            // A load event counts only after this navigation's document committed, so a late
            // load event of the previous document is not taken for ours.
            let mut committed = loader.is_none();
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => bail!("page closed"),
                };
                let p = &event["params"];
                match event["method"].as_str().unwrap_or_default() {
                    "Page.frameNavigated"
                        if loader.is_some() && p["frame"]["loaderId"].as_str() == loader =>
                    {
                        committed = true
                    }
                    "Page.loadEventFired" if committed => return Ok(()),
                    // Only for a same-document navigation: a page's own pushState during a
                    // full load must not end the wait early.
                    "Page.navigatedWithinDocument"
                        if loader.is_none() && p["frameId"].as_str() == Some(frame) =>
                    {
                        return Ok(());
                    }
                    _ => {}
                }
            }
        };
        match timeout(NAVIGATION_TIMEOUT, wait).await {
            Ok(result) => result,
            Err(_) => {
                let closed = lock(&self.context.cdp.shared).closed.clone();
                let why = closed
                    .map(|c| format!(" (connection to Chromium closed: {c})"))
                    .unwrap_or_default();
                bail!("{url} did not finish loading within {NAVIGATION_TIMEOUT:?}{why}")
            }
        }
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value as JSON
    /// (`undefined` and `NaN` as null); an exception is an error with its text.
    pub async fn eval(&self, js: &str) -> anyhow::Result<Value> {
        let params = json!({ "expression": js, "returnByValue": true, "awaitPromise": true });
        let result = self.call("Runtime.evaluate", params).await?;
        if let Some(details) = result.get("exceptionDetails") {
            bail!("evaluating `{js}` threw: {}", exception_text(details));
        }
        let object = &result["result"];
        Ok(match object["unserializableValue"].as_str() {
            Some("-0") | Some("0n") => json!(0),
            Some("NaN") => Value::Null,
            Some(other) => Value::String(other.to_string()),
            None => object["value"].clone(),
        })
    }

    /// Polls `js_expr` every 50 ms until its value is truthy and returns that value; errors
    /// (the page may be navigating) are retried until `timeout` runs out.
    pub async fn wait_for(&self, js_expr: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("(not evaluated yet)");
        loop {
            match timeout_at(deadline, self.eval(js_expr)).await {
                Ok(Ok(value)) if truthy(&value) => return Ok(value),
                Ok(Ok(value)) => last = value.to_string(),
                Ok(Err(error)) => last = format!("error: {error:#}"),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                bail!("`{js_expr}` was not truthy within {timeout:?}; last value: {last}");
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `body` with `el` bound to the first element matching `selector`; errors if none.
    async fn with_element(&self, selector: &str, body: &str) -> anyhow::Result<Value> {
        let sel = serde_json::to_string(selector)?;
        let js = format!(
            "(() => {{ const el = document.querySelector({sel}); if (!el) return {{ missing: true }}; \
             return {{ value: (() => {{ {body} }})() }}; }})()"
        );
        let result = self.eval(&js).await?;
        if result["missing"] == true {
            bail!("no element matches `{selector}`");
        }
        Ok(result["value"].clone())
    }

    /// Scrolls the first element matching `selector` into view and clicks it. Fails when it
    /// is disabled or hidden (a person could not click it either).
    pub async fn click(&self, selector: &str) -> anyhow::Result<()> {
        let refused = self
            .with_element(
                selector,
                "if (el.disabled) return 'disabled'; \
                 if (!el.getClientRects().length) return 'hidden'; \
                 el.scrollIntoView({ block: 'center' }); el.click(); return null;",
            )
            .await?;
        if let Some(why) = refused.as_str() {
            bail!("`{selector}` cannot be clicked: it is {why}");
        }
        Ok(())
    }

    /// Sets the value of the input matching `selector` and fires bubbling `input` and `change`.
    pub async fn fill(&self, selector: &str, value: &str) -> anyhow::Result<()> {
        let value = serde_json::to_string(value)?;
        // Through the prototype's setter, so frameworks that track `.value` see the change.
        let body = format!(
            "el.focus(); const d = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(el), 'value'); \
             if (d && d.set) d.set.call(el, {value}); else el.value = {value}; \
             el.dispatchEvent(new Event('input', {{ bubbles: true }})); \
             el.dispatchEvent(new Event('change', {{ bubbles: true }}));"
        );
        self.with_element(selector, &body).await?;
        Ok(())
    }

    /// The trimmed `textContent` of the first element matching `selector`.
    pub async fn text(&self, selector: &str) -> anyhow::Result<String> {
        let value = self.with_element(selector, "return (el.textContent || '').trim();").await?;
        Ok(value.as_str().unwrap_or_default().to_string())
    }

    /// Writes a full-page PNG screenshot to `path`, creating its parent directories.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let params = json!({ "format": "png", "captureBeyondViewport": true });
        let shot = self.call("Page.captureScreenshot", params).await?;
        let data = shot["data"].as_str().context("captureScreenshot: no data")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .context("decoding the screenshot")?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        tokio::fs::write(path, png).await.with_context(|| format!("writing {}", path.display()))
    }

    /// Errors since the page was opened: `console.error`/`console.assert` calls, uncaught
    /// exceptions, and error-level browser log entries (failed loads, CSP violations, …).
    pub fn console_errors(&self) -> Vec<String> {
        lock(&self.state.log)
            .iter()
            .filter(|(error, _)| *error)
            .map(|(_, text)| text.clone())
            .collect()
    }

    /// Everything logged since the page was opened (all console calls, exceptions and browser
    /// log entries), for debugging.
    pub fn console_messages(&self) -> Vec<String> {
        lock(&self.state.log).iter().map(|(_, text)| text.clone()).collect()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let cdp = &self.context.cdp;
        lock(&cdp.shared).sessions.remove(&self.session_id);
        cdp.notify("Target.closeTarget", json!({ "targetId": self.target_id }));
    }
}
