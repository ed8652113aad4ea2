//! The browser under test: finds Chromium and chromedriver, starts one
//! chromedriver (and through it one headless Chromium with a fresh profile)
//! per test, runs the test's body, saves a screenshot and the page's HTML if
//! the body fails or panics, and always ends the session and the processes.

use std::future::Future;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fantoccini::{Client, ClientBuilder};
use futures_util::FutureExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::pages::Browser;

/// How long one test's body may take before it counts as failed (and its
/// page is saved): generous, as the machine may be busy compiling.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Browsers running at once in this test binary: each Chromium wants a
/// core, and the platform hashes passwords with argon2 on every login.
static BROWSERS: Semaphore = Semaphore::const_new(2);

/// The Chromium and chromedriver executables.
#[derive(Debug, Clone)]
pub struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The browser tools, or `None` (after printing why) when they are missing
/// outside CI. Under `CI` a missing tool fails the test.
pub fn tools() -> Option<Tools> {
    let chromium = ["chromium", "chromium-browser"]
        .iter()
        .find_map(|n| in_path(n));
    let chromedriver = in_path("chromedriver");
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Some(Tools {
            chromium,
            chromedriver,
        }),
        (chromium, chromedriver) => {
            let missing: Vec<&str> = [
                chromium.is_none().then_some("chromium"),
                chromedriver.is_none().then_some("chromedriver"),
            ]
            .into_iter()
            .flatten()
            .collect();
            let missing = missing.join(" and ");
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{missing} not found in PATH: the dashboard's browser tests need them; \
                     .ci/run must install the Debian packages `chromium chromium-driver`"
                );
            }
            noxus_testkit::report_skip(
                "dashboard browser test",
                &format!(
                    "{missing} not found in PATH (install the Debian packages \
                     `chromium chromium-driver` to run the dashboard tests)"
                ),
            );
            None
        }
    }
}

/// The target directory (`target/`, or wherever `CARGO_TARGET_DIR` points).
pub fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

/// Where a failed test leaves its screenshot and page.
pub fn failures_dir() -> PathBuf {
    target_dir().join("dashboard-failures")
}

/// Where tests leave screenshots for reviewers.
pub fn screens_dir() -> PathBuf {
    target_dir().join("dashboard-screens")
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A chromedriver child process in its own process group, so that ending it
/// also ends the Chromium it started. Ended on drop, whatever happened.
struct Driver {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Driver {
    async fn start(tools: &Tools, log: PathBuf) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let mut last_problem = String::new();
        // A free port can be taken between probing and binding: try a few.
        for _attempt in 0..3 {
            let port = free_port()?;
            let child = Command::new(&tools.chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .with_context(|| format!("starting {}", tools.chromedriver.display()))?;
            let mut driver = Driver {
                child,
                url: format!("http://127.0.0.1:{port}"),
                log: log.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = driver.child.try_wait()? {
                    last_problem = format!("chromedriver exited at start ({status})");
                    break;
                }
                match http.get(format!("{}/status", driver.url)).send().await {
                    Ok(r) if r.status().is_success() => return Ok(driver),
                    Ok(r) => last_problem = format!("chromedriver /status answered {}", r.status()),
                    Err(e) => last_problem = format!("chromedriver /status: {e}"),
                }
                if Instant::now() > deadline {
                    bail!("chromedriver did not answer within 20 s: {last_problem}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        bail!("chromedriver did not start: {last_problem}")
    }

    /// Signals the whole process group (chromedriver and its Chromium).
    fn signal_group(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            // chromedriver is gone; its Chromium may not be.
            self.signal_group("-KILL");
            return;
        }
        if self.signal_group("-TERM") {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.signal_group("-KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn capabilities(tools: &Tools, profile: &Path) -> fantoccini::wd::Capabilities {
    let args = [
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-default-apps".to_owned(),
        "--window-size=1280,1000".to_owned(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": tools.chromium,
            "args": args,
        },
    });
    match caps {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    }
}

/// Runs one dashboard test: `body` gets a logged-out browser pointed at
/// `base_url`. On an error, a panic or a timeout, the page's screenshot and
/// HTML go to `target/dashboard-failures/<test>.png/.html` (paths printed)
/// and the test panics. The session and chromedriver end in every case.
pub async fn run<F, Fut>(test: &str, tools: &Tools, base_url: &str, body: F)
where
    F: FnOnce(Browser) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let _permit = BROWSERS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let started = Instant::now();
    let profile = tempfile::tempdir().expect("a temporary Chromium profile");
    let driver = Driver::start(tools, profile.path().join("chromedriver.log"))
        .await
        .unwrap_or_else(|e| panic!("{test}: {e:#}"));
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities(tools, &profile.path().join("chromium")))
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("{test}: no WebDriver session with Chromium: {e}"));
    let browser = Browser::new(client.clone(), base_url);
    let ready = started.elapsed();

    let outcome = AssertUnwindSafe(tokio::time::timeout(TEST_TIMEOUT, body(browser)))
        .catch_unwind()
        .await;
    let failure = match outcome {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(err))) => Some(Failure::Error(format!("{err:#}"))),
        Ok(Err(_elapsed)) => Some(Failure::Error(format!(
            "timed out after {} s",
            TEST_TIMEOUT.as_secs()
        ))),
        Err(panic) => Some(Failure::Panic(panic)),
    };
    let artifacts = match &failure {
        Some(_) => Some(save_failure(test, &client, &driver.log).await),
        None => None,
    };

    if tokio::time::timeout(Duration::from_secs(10), client.close())
        .await
        .is_err()
    {
        eprintln!("{test}: closing the WebDriver session timed out; killing chromedriver");
    }
    drop(driver);
    drop(profile);
    println!(
        "{test}: browser ready in {:.1} s, whole test {:.1} s (not counting the wait for a free browser slot)",
        ready.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    match failure {
        None => {}
        Some(Failure::Error(message)) => panic!(
            "{test} failed: {message}\n{}",
            artifacts.unwrap_or_default()
        ),
        Some(Failure::Panic(panic)) => {
            eprintln!("{test} panicked\n{}", artifacts.unwrap_or_default());
            std::panic::resume_unwind(panic)
        }
    }
}

/// `future`, unless it takes longer than 15 s (a wedged browser).
async fn within<T>(future: impl Future<Output = T>) -> Result<T, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(15), future).await
}

enum Failure {
    Error(String),
    Panic(Box<dyn std::any::Any + Send>),
}

/// Saves the screenshot, the HTML and chromedriver's log; returns a
/// description of where they went (and of what could not be saved).
async fn save_failure(test: &str, client: &Client, driver_log: &Path) -> String {
    let dir = failures_dir();
    let mut report = Vec::new();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return format!("  (cannot create {}: {e})", dir.display());
    }
    match within(client.current_url()).await {
        Ok(Ok(url)) => report.push(format!("  page:       {url}")),
        _ => report.push("  page:       (unknown URL)".to_owned()),
    }
    let png = dir.join(format!("{test}.png"));
    match within(client.screenshot()).await {
        Ok(Ok(bytes)) => match std::fs::write(&png, bytes) {
            Ok(()) => report.push(format!("  screenshot: {}", png.display())),
            Err(e) => report.push(format!("  screenshot: cannot write {}: {e}", png.display())),
        },
        Ok(Err(e)) => report.push(format!("  screenshot: failed: {e}")),
        Err(_) => report.push("  screenshot: timed out".to_owned()),
    }
    let html = dir.join(format!("{test}.html"));
    match within(client.source()).await {
        Ok(Ok(source)) => match std::fs::write(&html, source) {
            Ok(()) => report.push(format!("  html:       {}", html.display())),
            Err(e) => report.push(format!(
                "  html:       cannot write {}: {e}",
                html.display()
            )),
        },
        Ok(Err(e)) => report.push(format!("  html:       failed: {e}")),
        Err(_) => report.push("  html:       timed out".to_owned()),
    }
    let log = dir.join(format!("{test}.chromedriver.log"));
    if std::fs::copy(driver_log, &log).is_ok() {
        report.push(format!("  driver log: {}", log.display()));
    }
    let report = report.join("\n");
    eprintln!("{test}: saved the failing page:\n{report}");
    report
}
