//! The headless-Chromium driver against pages served by a hand-written HTTP server.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use ewpm_testkit::browser::{Browser, Page};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>testkit</title><link rel="icon" href="data:,"></head>
<body>
  <input id="name" oninput="window.inputs = (window.inputs || 0) + 1"
         onchange="window.changes = (window.changes || 0) + 1">
  <button id="copy" onclick="document.getElementById('out').textContent =
      '  ' + document.getElementById('name').value + '  '">copy</button>
  <div id="out"></div>
  <div style="height: 3000px">tall</div>
  <div id="bottom">bottom</div>
</body></html>"#;

/// Serves [`PAGE`] at every path over HTTP/1.1 on 127.0.0.1:0; returns the base URL.
async fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// Waits until a console error containing `needle` was collected (events arrive asynchronously).
async fn console_error_containing(page: &Page, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(e) = page.console_errors().into_iter().find(|e| e.contains(needle)) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no console error containing {needle:?}; errors: {:?}; all messages: {:?}",
            page.console_errors(),
            page.console_messages()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn page_loads_evaluates_interacts_and_collects_errors() {
    let base = serve().await;
    let browser = Browser::launch().await.expect("launch chromium");
    let context = browser.new_context().await.expect("context");
    let page = context.new_page().await.expect("page");

    page.set_viewport(390, 844, true).await.expect("viewport");
    page.goto(&format!("{base}/home")).await.expect("goto");
    assert_eq!(page.eval("document.title").await.unwrap(), json!("testkit"));
    assert_eq!(page.eval("location.pathname").await.unwrap(), json!("/home"));
    assert_eq!(page.eval("window.innerWidth").await.unwrap(), json!(390));
    assert_eq!(page.eval("1+1").await.unwrap(), json!(2));
    assert_eq!(
        page.eval("Promise.resolve({ a: [1, 'x'] })").await.unwrap(),
        json!({ "a": [1, "x"] })
    );
    assert_eq!(page.eval("undefined").await.unwrap(), json!(null));
    let thrown = page.eval("throw new Error('nope')").await.expect_err("a throw is an error");
    assert!(format!("{thrown:#}").contains("nope"), "{thrown:#}");
    assert!(page.console_errors().is_empty(), "errors before any: {:?}", page.console_errors());

    // A fragment-only navigation fires no load event; goto must still return.
    page.goto(&format!("{base}/home#section")).await.expect("fragment goto");
    assert_eq!(page.eval("location.hash").await.unwrap(), json!("#section"));
    page.goto(&format!("{base}/home#section")).await.expect("same fragment again");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let refused = page.goto(&format!("http://{closed}/")).await.expect_err("nothing listens there");
    assert!(format!("{refused:#}").contains("ERR_CONNECTION_REFUSED"), "{refused:#}");
    // A full navigation again, so the page is a fresh document (window.inputs unset).
    page.goto(&format!("{base}/again")).await.expect("second goto");
    assert_eq!(page.eval("location.pathname").await.unwrap(), json!("/again"));

    page.fill("#name", "Ada \"quoted\"").await.expect("fill");
    assert_eq!(page.eval("[window.inputs, window.changes]").await.unwrap(), json!([1, 1]));
    assert_eq!(page.text("#out").await.expect("text"), "");
    page.click("#copy").await.expect("click");
    assert_eq!(page.text("#out").await.expect("text"), "Ada \"quoted\"");
    assert!(page.click("#missing").await.is_err(), "click on nothing must fail");
    assert!(page.text("#missing").await.is_err(), "text of nothing must fail");

    let started = Instant::now();
    let unset =
        page.eval("setTimeout(() => { window.later = 'ready' }, 200); window.later === undefined");
    assert_eq!(unset.await.unwrap(), json!(true));
    let later = page.wait_for("window.later", Duration::from_secs(5)).await.expect("wait_for");
    assert_eq!(later, json!("ready"));
    assert!(started.elapsed() >= Duration::from_millis(150), "wait_for returned too early");
    let never = page.wait_for("window.never", Duration::from_millis(300)).await.expect_err("never");
    assert!(format!("{never:#}").contains("window.never"), "{never:#}");

    page.eval("console.error('boom'); console.log('just info')").await.unwrap();
    let boom = console_error_containing(&page, "boom").await;
    assert!(boom.starts_with("console.error"), "{boom}");
    page.eval("setTimeout(() => { throw new Error('kaboom') }, 0)").await.unwrap();
    let kaboom = console_error_containing(&page, "kaboom").await;
    assert!(kaboom.contains("Error: kaboom"), "{kaboom}");
    assert!(
        page.console_messages().iter().any(|m| m.contains("just info")),
        "{:?}",
        page.console_messages()
    );
    assert!(
        !page.console_errors().iter().any(|m| m.contains("just info")),
        "{:?}",
        page.console_errors()
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser/page.png");
    let _ = std::fs::remove_file(&shot);
    page.screenshot(&shot).await.expect("screenshot");
    let png = std::fs::read(&shot).expect("read screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG: {:?}", &png[..png.len().min(8)]);
    // Full page: taller than the 844 px viewport (the page is over 3000 px tall).
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(height > 3000, "screenshot is {height} px tall");
}

#[tokio::test]
async fn contexts_do_not_share_storage() {
    let base = serve().await;
    let browser = Browser::launch().await.expect("launch chromium");
    let a = browser.new_context().await.expect("context a");
    let b = browser.new_context().await.expect("context b");

    let a1 = a.new_page().await.expect("page a1");
    a1.goto(&base).await.expect("goto a1");
    a1.eval("localStorage.setItem('who', 'a')").await.unwrap();
    assert_eq!(a1.eval("localStorage.getItem('who')").await.unwrap(), json!("a"));

    // Same context, same origin: the value is there (so its absence below means isolation).
    let a2 = a.new_page().await.expect("page a2");
    a2.goto(&base).await.expect("goto a2");
    assert_eq!(a2.eval("localStorage.getItem('who')").await.unwrap(), json!("a"));

    let b1 = b.new_page().await.expect("page b1");
    b1.goto(&base).await.expect("goto b1");
    assert_eq!(
        b1.eval("location.origin").await.unwrap(),
        a1.eval("location.origin").await.unwrap()
    );
    assert_eq!(b1.eval("localStorage.getItem('who')").await.unwrap(), json!(null));
}
